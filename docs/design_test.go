// Package docs holds the design doc of the repository; its test keeps every
// reference to the design doc pointing at a section that exists.
package docs

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	// sectionHeading is a numbered top-level section of design.md: "## 4. Mounts…".
	sectionHeading = regexp.MustCompile(`^## (\d+)\. `)
	// designRef is how code, errors and docs cite it: "docs/design.md §4",
	// "design.md §11", "docs/design.md §2–§5" (each number is checked).
	designRef = regexp.MustCompile(`design\.md ((?:§\d+(?:[–,/-]\s*|\s+and\s+)?)+)`)
	// sectionNumber picks the numbers out of a designRef match.
	sectionNumber = regexp.MustCompile(`§(\d+)`)
	// outsideRef is a reference to a design doc that is not in this
	// repository: the spec it was written against lives outside it, and a
	// reader who has only the repository cannot follow such a reference.
	outsideRef = regexp.MustCompile(`\bDESIGN\b`)
)

// sections returns the section numbers design.md defines.
func sections(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open("design.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := sectionHeading.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDesignReferences reads every text file of the repository and fails on
// a design-doc reference naming a section design.md lacks, or on a
// reference to a design doc outside the repository.
func TestDesignReferences(t *testing.T) {
	have := sections(t)
	if len(have) < 14 {
		t.Fatalf("design.md defines %d numbered sections, want at least 14", len(have))
	}
	root := ".."
	refs := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "_output" || name == "bin" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(name) {
		case ".go", ".md", ".sh", ".toml", "":
		default:
			return nil
		}
		if p == filepath.Join(root, "docs", "design_test.go") {
			return nil // this file's own patterns and comments
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if outsideRef.MatchString(line) {
				t.Errorf("%s:%d: refers to a design doc outside the repository (cite docs/design.md §N): %s", p, i+1, strings.TrimSpace(line))
			}
			for _, m := range designRef.FindAllStringSubmatch(line, -1) {
				for _, n := range sectionNumber.FindAllStringSubmatch(m[1], -1) {
					refs++
					if !have[n[1]] {
						t.Errorf("%s:%d: docs/design.md has no §%s: %s", p, i+1, n[1], strings.TrimSpace(line))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if refs == 0 {
		t.Fatal("found no reference to docs/design.md at all: the walk read nothing")
	}
}
