package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
)

// snapshot-mounts prints the mounts a snapshotter returns for a snapshot,
// exactly as the Snapshotter API hands them out.
//
// Why not `ctr snapshots mounts`: in containerd 2.4 it first activates the
// mounts through containerd's mount manager, whose erofs handler
// loop-mounts erofs/format/erofs on the host, and prints only what is left
// (docs/design.md §4, "Showing mounts"). The snapshots gRPC service proxies
// Mounts to the snapshotter untouched, so asking it directly shows what a
// VM runtime such as qemubox receives, and mounts nothing anywhere.

func init() {
	register("snapshot-mounts", command{
		usage: "snapshot-mounts [--address SOCK] [--namespace NS] [--snapshotter NAME] [--json] KEY",
		help:  "print a snapshot's raw mounts from the Snapshotter API (no host mount, unlike ctr)",
		run:   runSnapshotMounts,
	})
}

// Client settings. The flags default to ctr's environment variables, then
// to containerd's defaults, and the snapshotter to ours.
const (
	defaultSnapshotter = "erofs-vm"
	// snapshotDialTimeout bounds connecting to the daemon.
	snapshotDialTimeout = 10 * time.Second
	// snapshotCallTimeout bounds the Mounts call: it only reads metadata.
	snapshotCallTimeout = 30 * time.Second
)

// jsonMount is the --json form of one mount: containerd's own field names,
// lower-cased, so scripts need no knowledge of Go types.
type jsonMount struct {
	Type    string   `json:"type"`
	Source  string   `json:"source"`
	Target  string   `json:"target,omitempty"`
	Options []string `json:"options"`
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func runSnapshotMounts(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("snapshot-mounts", flag.ContinueOnError)
	fl.SetOutput(stderr)
	address := fl.String("address", envOr("CONTAINERD_ADDRESS", defaults.DefaultAddress), "containerd gRPC socket ($CONTAINERD_ADDRESS)")
	ns := fl.String("namespace", envOr("CONTAINERD_NAMESPACE", namespaces.Default), "containerd namespace ($CONTAINERD_NAMESPACE)")
	sn := fl.String("snapshotter", envOr("CONTAINERD_SNAPSHOTTER", defaultSnapshotter), "snapshotter name ($CONTAINERD_SNAPSHOTTER)")
	asJSON := fl.Bool("json", false, "print a JSON array of {type, source, target, options}")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return errors.New("want exactly one snapshot KEY")
	}
	key := fl.Arg(0)

	ctx := namespaces.WithNamespace(context.Background(), *ns)
	mounts, err := rawSnapshotMounts(ctx, *address, *sn, key)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeMountsJSON(stdout, mounts)
	}
	return writeMountsText(stdout, mounts)
}

// rawSnapshotMounts asks the daemon at address for the mounts of key in
// snapshotter sn. The client's snapshot service is the plain gRPC proxy:
// nothing is activated or mounted.
func rawSnapshotMounts(ctx context.Context, address, sn, key string) ([]mount.Mount, error) {
	// gRPC connects lazily and retries a missing socket until the call's
	// deadline: say at once that nothing listens there.
	if !strings.Contains(address, "://") {
		if _, err := os.Stat(address); err != nil {
			return nil, fmt.Errorf("no containerd socket at %s (is the daemon running? --address): %w", address, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, snapshotCallTimeout)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(snapshotDialTimeout))
	if err != nil {
		return nil, fmt.Errorf("connect to containerd at %s: %w", address, err)
	}
	defer c.Close()
	mounts, err := c.SnapshotService(sn).Mounts(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("snapshotter %s: mounts of %q: %w", sn, key, err)
	}
	return mounts, nil
}

// writeMountsText prints one line per mount, columns aligned: type,
// source, options comma-joined ("-" when there are none, so every line has
// three fields for awk and cut).
func writeMountsText(w io.Writer, mounts []mount.Mount) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, m := range mounts {
		opts := strings.Join(m.Options, ",")
		if opts == "" {
			opts = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", m.Type, m.Source, opts)
	}
	return tw.Flush()
}

// writeMountsJSON prints the mounts as an indented JSON array ([] for none).
func writeMountsJSON(w io.Writer, mounts []mount.Mount) error {
	out := make([]jsonMount, 0, len(mounts))
	for _, m := range mounts {
		opts := m.Options
		if opts == nil {
			opts = []string{}
		}
		out = append(out, jsonMount{Type: m.Type, Source: m.Source, Target: m.Target, Options: opts})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
