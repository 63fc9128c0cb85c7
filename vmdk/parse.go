package vmdk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ParseDescriptor reads a text VMDK descriptor such as WriteDescriptor or
// qemu-img writes (a binary sparse VMDK is rejected). It is meant for tests
// and tools and is strict: version, CID, parentCID and createType must each
// appear exactly once, every non-comment line must be a header key, an extent
// line or a ddb.* entry, and the result must satisfy the same rules the
// writer does, so any descriptor it returns renders back to an equal one.
// Input beyond MaxDescriptorSize is an error (qemu would ignore it), so
// hostile input costs bounded memory. Errors name the line.
func ParseDescriptor(r io.Reader) (*Descriptor, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxDescriptorSize+1))
	if err != nil {
		return nil, fmt.Errorf("vmdk: read descriptor: %w", err)
	}
	if len(data) > MaxDescriptorSize {
		return nil, fmt.Errorf("vmdk: descriptor larger than %d bytes", MaxDescriptorSize)
	}
	if len(data) >= 4 && (string(data[:4]) == "KDMV" || string(data[:4]) == "COWD") {
		return nil, errors.New("vmdk: binary sparse VMDK, not a text descriptor")
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, errors.New("vmdk: descriptor contains a NUL byte")
	}

	d := &Descriptor{}
	seen := map[string]bool{}
	inDDB := false
	for n, line := range strings.Split(string(data), "\n") {
		lineNo := n + 1
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" {
			continue
		}
		if line[0] == '#' {
			if line == "#DDB" {
				inDDB = true
			}
			continue
		}
		if err := d.parseLine(line, seen, inDDB); err != nil {
			return nil, fmt.Errorf("vmdk: line %d: %w", lineNo, err)
		}
	}
	for _, k := range []string{"version", "CID", "parentCID", "createType"} {
		if !seen[k] {
			return nil, fmt.Errorf("vmdk: no %s in descriptor", k)
		}
	}
	if err := d.validate(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Descriptor) parseLine(line string, seen map[string]bool, inDDB bool) error {
	if strings.HasPrefix(line, "ddb.") {
		k, v, err := splitKeyValue(line, true)
		if err != nil {
			return err
		}
		d.DDB = append(d.DDB, Entry{k, v})
		return nil
	}
	if inDDB {
		return fmt.Errorf("%.60q in the disk database is not a ddb.* entry", line)
	}
	// Header keys have no space before '=' in any writer we know; extent
	// lines start with an access mode and contain no '=' before the path.
	if i := strings.IndexByte(line, '='); i > 0 && isKey(strings.TrimSpace(line[:i])) {
		k, v, err := splitKeyValue(line, false)
		if err != nil {
			return err
		}
		return d.setHeader(k, v, seen)
	}
	e, err := parseExtent(line)
	if err != nil {
		return err
	}
	d.Extents = append(d.Extents, e)
	return nil
}

// splitKeyValue splits `key=value` or `key = "value"`; ddb values must be
// quoted, header values may be bare (version=1, CID=...).
func splitKeyValue(line string, mustQuote bool) (string, string, error) {
	k, v, ok := strings.Cut(line, "=")
	if !ok {
		return "", "", fmt.Errorf("%.60q: want key = \"value\"", line)
	}
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !isKey(k) {
		return "", "", fmt.Errorf("invalid key %.60q", k)
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		if strings.ContainsRune(v, '"') {
			return "", "", fmt.Errorf("%s: value %.60q has a '\"' inside", k, v)
		}
	} else if mustQuote || strings.ContainsRune(v, '"') {
		return "", "", fmt.Errorf("%s: value %.60q is not quoted", k, v)
	}
	return k, v, nil
}

func (d *Descriptor) setHeader(k, v string, seen map[string]bool) error {
	// A map, not a scan of d.Header: 1 MiB of one-byte keys must not cost
	// quadratic time.
	if seen[k] {
		return fmt.Errorf("duplicate %s", k)
	}
	seen[k] = true
	switch k {
	case "version":
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 0 {
			return fmt.Errorf("version %.20q is not a non-negative integer", v)
		}
		d.Version = int(n)
	case "CID", "parentCID":
		// qemu scans these with %x: hex, no 0x prefix.
		n, err := strconv.ParseUint(v, 16, 32)
		if err != nil {
			return fmt.Errorf("%s %.20q is not a 32-bit hex number", k, v)
		}
		if k == "CID" {
			d.CID = uint32(n)
		} else {
			d.ParentCID = uint32(n)
		}
	case "createType":
		d.CreateType = v
	default:
		d.Header = append(d.Header, Entry{k, v})
	}
	return nil
}

// parseExtent parses `ACCESS SECTORS TYPE ["PATH" [OFFSET]]`.
func parseExtent(line string) (Extent, error) {
	var e Extent
	fields := strings.Fields(line)
	if len(fields) < 3 {
		return e, fmt.Errorf("%.60q is neither a key=value nor an extent line", line)
	}
	e.Access, e.Type = fields[0], fields[2]
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return e, fmt.Errorf("extent size %.30q: not an integer", fields[1])
	}
	e.Sectors = n
	// The path is everything between the first pair of quotes after the
	// type, spaces included.
	rest := line
	for range 3 {
		rest = strings.TrimLeft(rest, " \t")
		rest = rest[strings.IndexAny(rest, " \t")+1:]
	}
	rest = strings.TrimSpace(rest)
	if len(fields) == 3 {
		rest = ""
	}
	if rest != "" {
		if rest[0] != '"' {
			return e, fmt.Errorf("extent path %.60q is not quoted", rest)
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return e, fmt.Errorf("extent path %.60q has no closing quote", rest)
		}
		e.Path = rest[1 : 1+end]
		rest = strings.TrimSpace(rest[2+end:])
		if rest != "" {
			off, err := strconv.ParseInt(rest, 10, 64)
			if err != nil {
				return e, fmt.Errorf("extent offset %.30q: not an integer", rest)
			}
			e.Offset, e.HasOffset = off, true
		}
	}
	if err := e.validate(); err != nil {
		return e, err
	}
	return e, nil
}
