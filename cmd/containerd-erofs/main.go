// Command containerd-erofs is a containerd daemon: every stock builtin plugin
// of containerd plus the erofs-vm snapshotter and differ.
//
// It is containerd's own command line (command.App()), so every flag and
// subcommand of containerd works the same. Two things differ: the program
// name, and the default --config, /etc/containerd-erofs/config.toml, so
// this daemon never picks up a stock containerd's config by accident.
// `--version` prints this project's version and the containerd it embeds;
// the Makefile sets both through containerd's version package.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"
	"github.com/urfave/cli/v3"

	_ "github.com/erofs-vm/containerd-erofs/builtins"
)

// defaultConfigPath is where `make install` puts hack/config.toml.
const defaultConfigPath = "/etc/containerd-erofs/config.toml"

func main() {
	app := command.App()
	app.Name = "containerd-erofs"
	for _, f := range app.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "config" {
			sf.Value = defaultConfigPath
		}
	}
	if err := app.Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-erofs:", err)
		os.Exit(1)
	}
}
