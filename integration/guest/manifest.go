package guest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A Manifest describes a directory tree by relative path ("." for the root,
// "./etc/passwd" below it): what the guest kernel shows of a mounted image,
// or what an independent extraction (GNU tar) put on the host. Comparing the
// two is how tests let the kernel judge an image. Names containing a
// newline or '|' are not supported.
type Manifest map[string]Entry

// Entry is one file of a Manifest.
type Entry struct {
	Mode       uint32 // st_mode: type and permission bits
	UID, GID   uint32
	Size       int64 // regular files only, else 0
	Major      uint32
	Minor      uint32 // device numbers of char/block devices
	Mtime      int64  // seconds
	MD5        string // regular files
	LinkTarget string // symlinks
}

// Markers around the manifest in guest output.
const (
	manifestBegin = "@@MANIFEST-BEGIN@@"
	manifestEnd   = "@@MANIFEST-END@@"
)

// ManifestScript returns a busybox sh snippet that prints the manifest of
// the tree at dir (not crossing mount points) for ParseManifest. It runs a
// handful of processes, not one per file (find -exec ... +), so a full
// rootfs stays affordable under TCG.
func ManifestScript(dir string) string {
	return fmt.Sprintf(`echo %s
( cd %s && find . -xdev -exec stat -c 'S|%%n|%%f|%%u|%%g|%%s|%%t|%%T|%%Y' {} + &&
  find . -xdev -type f -exec md5sum {} + | sed 's/^/M|/' &&
  find . -xdev -type l -exec stat -c 'L|%%n|%%N' {} + ) || echo 'E|manifest failed'
echo %s
`, manifestBegin, shellQuote(dir), manifestEnd)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// ParseManifest reads the manifest ManifestScript printed within out.
func ParseManifest(out string) (Manifest, error) {
	b := strings.Index(out, manifestBegin+"\n")
	e := strings.Index(out, manifestEnd)
	if b < 0 || e < b {
		return nil, fmt.Errorf("no manifest in output")
	}
	m := Manifest{}
	for _, line := range strings.Split(out[b+len(manifestBegin)+1:e], "\n") {
		if line == "" {
			continue
		}
		kind, rest, _ := strings.Cut(line, "|")
		switch kind {
		case "S":
			f := strings.Split(rest, "|")
			if len(f) != 8 {
				return nil, fmt.Errorf("manifest line %q: want 8 fields", line)
			}
			var en Entry
			mode, err1 := strconv.ParseUint(f[1], 16, 32)
			uid, err2 := strconv.ParseUint(f[2], 10, 32)
			gid, err3 := strconv.ParseUint(f[3], 10, 32)
			size, err4 := strconv.ParseInt(f[4], 10, 64)
			maj, err5 := strconv.ParseUint(f[5], 16, 32)
			min, err6 := strconv.ParseUint(f[6], 16, 32)
			mt, err7 := strconv.ParseInt(f[7], 10, 64)
			for _, err := range []error{err1, err2, err3, err4, err5, err6, err7} {
				if err != nil {
					return nil, fmt.Errorf("manifest line %q: %v", line, err)
				}
			}
			en.Mode, en.UID, en.GID, en.Mtime = uint32(mode), uint32(uid), uint32(gid), mt
			if en.Mode&unix.S_IFMT == unix.S_IFREG {
				en.Size = size
			}
			if t := en.Mode & unix.S_IFMT; t == unix.S_IFCHR || t == unix.S_IFBLK {
				en.Major, en.Minor = uint32(maj), uint32(min)
			}
			prev := m[f[0]]
			en.MD5, en.LinkTarget = prev.MD5, prev.LinkTarget
			m[f[0]] = en
		case "M":
			sum, name, ok := strings.Cut(rest, "  ")
			if !ok {
				return nil, fmt.Errorf("manifest line %q: bad md5sum line", line)
			}
			en := m[name]
			en.MD5 = sum
			m[name] = en
		case "L":
			name, q, _ := strings.Cut(rest, "|")
			prefix := "'" + name + "' -> '"
			if !strings.HasPrefix(q, prefix) || !strings.HasSuffix(q, "'") {
				return nil, fmt.Errorf("manifest line %q: bad symlink line", line)
			}
			en := m[name]
			en.LinkTarget = q[len(prefix) : len(q)-1]
			m[name] = en
		case "E":
			return nil, fmt.Errorf("guest: %s", rest)
		default:
			return nil, fmt.Errorf("manifest line %q: unknown kind", line)
		}
	}
	return m, nil
}

// HostManifest builds the Manifest of a host directory, the same way the
// guest snippet does.
func HostManifest(dir string) (Manifest, error) {
	m := Manifest{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := "."
		if rel != "." {
			name = "./" + rel
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("lstat %s: %w", p, err)
		}
		en := Entry{Mode: st.Mode, UID: st.Uid, GID: st.Gid, Mtime: st.Mtim.Sec}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			en.Size = st.Size
			if en.MD5, err = fileMD5(p); err != nil {
				return err
			}
		case unix.S_IFLNK:
			if en.LinkTarget, err = os.Readlink(p); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			en.Major, en.Minor = unix.Major(st.Rdev), unix.Minor(st.Rdev)
		}
		m[name] = en
		return nil
	})
	return m, err
}

func fileMD5(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Diff lists the differences between want and got, one line per path,
// sorted; nil when equal. With ignoreMtime, modification times are not
// compared.
func Diff(want, got Manifest, ignoreMtime bool) []string {
	var d []string
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			d = append(d, "missing: "+p)
		default:
			if ignoreMtime {
				w.Mtime, g.Mtime = 0, 0
			}
			if w != g {
				d = append(d, fmt.Sprintf("differs: %s: want %+v, got %+v", p, w, g))
			}
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			d = append(d, "unexpected: "+p)
		}
	}
	sort.Strings(d)
	return d
}
