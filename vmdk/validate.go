package vmdk

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// reservedHeader are the header keys Descriptor has fields for.
var reservedHeader = map[string]bool{"version": true, "CID": true, "parentCID": true, "createType": true}

// validate checks that d can be rendered so that both qemu and ParseDescriptor
// read back exactly d.
func (d *Descriptor) validate() error {
	if d.Version < 0 {
		return fmt.Errorf("vmdk: negative version %d", d.Version)
	}
	if err := checkValue("createType", d.CreateType); err != nil {
		return err
	}
	if d.CreateType == "" {
		return errors.New("vmdk: empty createType")
	}
	for _, h := range d.Header {
		if !isKey(h.Key) || reservedHeader[h.Key] || strings.HasPrefix(h.Key, "ddb.") {
			return fmt.Errorf("vmdk: invalid header key %q", h.Key)
		}
		if err := checkValue(h.Key, h.Value); err != nil {
			return err
		}
	}
	var total int64
	for i, e := range d.Extents {
		if err := e.validate(); err != nil {
			return fmt.Errorf("vmdk: extent %d: %w", i, err)
		}
		if e.Sectors > math.MaxInt64/SectorSize-total {
			return fmt.Errorf("vmdk: extent %d: disk size overflows", i)
		}
		total += e.Sectors
	}
	for _, e := range d.DDB {
		if !strings.HasPrefix(e.Key, "ddb.") || !isKey(e.Key) {
			return fmt.Errorf("vmdk: invalid disk database key %q", e.Key)
		}
		if err := checkValue(e.Key, e.Value); err != nil {
			return err
		}
	}
	return nil
}

func (e Extent) validate() error {
	switch e.Access {
	case AccessRW, AccessRDONLY, AccessNOACCESS:
	default:
		return fmt.Errorf("access %q is not RW, RDONLY or NOACCESS", e.Access)
	}
	if e.Sectors <= 0 {
		// qemu silently skips such a line, shifting every later extent.
		return fmt.Errorf("%d sectors: must be positive", e.Sectors)
	}
	if !isType(e.Type) {
		return fmt.Errorf("invalid extent type %q", e.Type)
	}
	if e.Type == TypeZero {
		if e.Path != "" || e.HasOffset {
			return errors.New("a ZERO extent has no file and no offset")
		}
		return nil
	}
	if err := CheckPath(e.Path); err != nil {
		return err
	}
	if e.Type == TypeFlat && !e.HasOffset {
		return fmt.Errorf("FLAT extent of %q has no offset", e.Path)
	}
	if e.HasOffset && e.Offset < 0 {
		return fmt.Errorf("negative offset %d", e.Offset)
	}
	if !e.HasOffset && e.Offset != 0 {
		return errors.New("offset set but HasOffset false")
	}
	return nil
}

// CheckPath reports whether p can be written as an extent path that qemu
// reads back unchanged; it does not require p to be absolute (parsed
// descriptors may hold relative paths, the writer requires absolute ones).
func CheckPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty extent path")
	case len(p) > MaxPathLen:
		return fmt.Errorf("extent path %.40q... is %d bytes, qemu reads at most %d", p, len(p), MaxPathLen)
	case !utf8.ValidString(p):
		return fmt.Errorf("extent path %q is not valid UTF-8", p)
	case strings.ContainsFunc(p, isControl):
		return fmt.Errorf("extent path %q contains a control character (the format has no escapes)", p)
	case strings.ContainsRune(p, '"'):
		return fmt.Errorf("extent path %q contains '\"' (the format has no escapes)", p)
	case strings.Contains(p, "parentFileNameHint"):
		return fmt.Errorf("extent path %q contains \"parentFileNameHint\", which qemu would take for a backing file", p)
	}
	return nil
}

func checkValue(key, v string) error {
	if !utf8.ValidString(v) || strings.ContainsFunc(v, isControl) || strings.ContainsRune(v, '"') {
		return fmt.Errorf("vmdk: value of %s %q: control character, '\"' or invalid UTF-8", key, v)
	}
	if key == "parentFileNameHint" || strings.Contains(v, "parentFileNameHint") {
		// This package describes disks without a parent.
		return fmt.Errorf("vmdk: %s: parent disks are not supported", key)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// isKey accepts the keys VMDK descriptors use: letters, digits, '.', '_'.
func isKey(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// isType accepts an extent type token: 1-10 upper-case letters (qemu scans %10s).
func isType(t string) bool {
	if t == "" || len(t) > 10 {
		return false
	}
	for i := 0; i < len(t); i++ {
		if t[i] < 'A' || t[i] > 'Z' {
			return false
		}
	}
	return true
}
