// Command containerd-erofs is a containerd daemon: every stock builtin plugin
// of containerd plus the erofs-vm snapshotter and differ.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/containerd/v2/cmd/containerd/command"

	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"
)

func main() {
	if err := command.App().Run(context.Background(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "containerd-erofs:", err)
		os.Exit(1)
	}
}
