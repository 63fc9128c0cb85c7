package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/erofs-vm/containerd-erofs/erofs"
)

// The read-side commands: ls, cat and extract an image through this
// project's own reader (never a mount), with its extra devices given as
// --device in device-table order, or none to read a flat concatenation.

func init() {
	register("ls", command{
		usage: "ls [--device F]... [-l] IMAGE [PATH]",
		help:  "list a directory of an image (or one entry)",
		run:   runLs,
	})
	register("cat", command{
		usage: "cat [--device F]... IMAGE PATH",
		help:  "write a regular file of an image to stdout",
		run:   runCat,
	})
	register("extract", command{
		usage: "extract [--device F]... IMAGE DIR",
		help:  "extract an image into DIR with owners, modes, times, xattrs, links and devices",
		run:   runExtract,
	})
}

// deviceList collects repeated --device flags.
type deviceList []string

func (d *deviceList) String() string     { return strings.Join(*d, ",") }
func (d *deviceList) Set(v string) error { *d = append(*d, v); return nil }

// openFlags parses the common flags and opens IMAGE; it returns the image
// and the positional arguments after IMAGE.
func openFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet), minArgs, maxArgs int) (*erofs.Image, []string, error) {
	fl := flag.NewFlagSet(name, flag.ContinueOnError)
	fl.SetOutput(stderr)
	var devs deviceList
	fl.Var(&devs, "device", "extra device file, in device-table order (repeat)")
	if extra != nil {
		extra(fl)
	}
	if err := fl.Parse(args); err != nil {
		return nil, nil, err
	}
	rest := fl.Args()
	if len(rest) < minArgs || len(rest) > maxArgs {
		fl.Usage()
		return nil, nil, fmt.Errorf("%s: wrong number of arguments", name)
	}
	im, err := erofs.Open(rest[0], devs...)
	if err != nil {
		return nil, nil, err
	}
	return im, rest[1:], nil
}

// imagePath turns a user path ("/usr/bin", "usr/bin/", "") into an
// fs.FS name.
func imagePath(p string) string {
	p = path.Clean("/" + p)
	if p == "/" {
		return "."
	}
	return p[1:]
}

func runLs(args []string, stdout, stderr io.Writer) error {
	var long bool
	im, rest, err := openFlags("ls", args, stderr, func(fl *flag.FlagSet) {
		fl.BoolVar(&long, "l", false, "long format: mode, uid/gid, size, mtime, name, -> target")
	}, 1, 2)
	if err != nil {
		return err
	}
	defer im.Close()
	name := "."
	if len(rest) == 1 {
		name = imagePath(rest[0])
	}
	fi, err := im.Lstat(name)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return lsEntry(im, stdout, name, fi, long)
	}
	ents, err := im.ReadDir(name)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := path.Join(name, e.Name())
		if !long {
			fmt.Fprintln(stdout, e.Name())
			continue
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := lsEntry(im, stdout, p, fi, true); err != nil {
			return err
		}
	}
	return nil
}

func lsEntry(im *erofs.Image, w io.Writer, p string, fi fs.FileInfo, long bool) error {
	if !long {
		_, err := fmt.Fprintln(w, fi.Name())
		return err
	}
	in := fi.Sys().(*erofs.Inode)
	size := fmt.Sprint(in.Size)
	if fi.Mode()&fs.ModeDevice != 0 {
		size = fmt.Sprintf("%d, %d", in.DevMajor(), in.DevMinor())
	}
	line := fmt.Sprintf("%s %d/%d %10s %s %s", modeString(in.Mode), in.UID, in.GID, size,
		in.ModTime().UTC().Format(time.DateTime), fi.Name())
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := im.ReadLink(p)
		if err != nil {
			return err
		}
		line += " -> " + target
	}
	_, err := fmt.Fprintln(w, line)
	return err
}

// modeString renders st_mode as ls -l does ("drwxr-sr-x", "-rwsr-xr-x").
func modeString(m uint32) string {
	var b [10]byte
	switch m & syscall.S_IFMT {
	case syscall.S_IFDIR:
		b[0] = 'd'
	case syscall.S_IFLNK:
		b[0] = 'l'
	case syscall.S_IFCHR:
		b[0] = 'c'
	case syscall.S_IFBLK:
		b[0] = 'b'
	case syscall.S_IFIFO:
		b[0] = 'p'
	case syscall.S_IFSOCK:
		b[0] = 's'
	default:
		b[0] = '-'
	}
	const rwx = "rwxrwxrwx"
	for i := range 9 {
		if m&(1<<(8-i)) != 0 {
			b[1+i] = rwx[i]
		} else {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, pos int, set, unset byte) {
		if m&bit != 0 {
			if b[pos] == 'x' {
				b[pos] = set
			} else {
				b[pos] = unset
			}
		}
	}
	special(syscall.S_ISUID, 3, 's', 'S')
	special(syscall.S_ISGID, 6, 's', 'S')
	special(syscall.S_ISVTX, 9, 't', 'T')
	return string(b[:])
}

func runCat(args []string, stdout, stderr io.Writer) error {
	im, rest, err := openFlags("cat", args, stderr, nil, 2, 2)
	if err != nil {
		return err
	}
	defer im.Close()
	name := imagePath(rest[0])
	fi, err := im.Lstat(name)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%v)", rest[0], fi.Mode().Type())
	}
	f, err := im.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	// Streams: the reader maps and reads each piece on demand.
	if _, err := io.CopyBuffer(struct{ io.Writer }{stdout}, f, make([]byte, copyBufSize)); err != nil {
		return fmt.Errorf("%s: %w", rest[0], err)
	}
	return nil
}

var errNotEmpty = errors.New("exists and is not empty")
