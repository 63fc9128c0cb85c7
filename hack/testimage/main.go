// Command testimage turns directory trees into OCI layer tars and layer tars
// into an OCI image layout archive, for hack/build-test-image.sh.
//
// It exists because the test image must be exact and reproducible: GNU tar
// cannot read overlayfs whiteouts (char 0:0, trusted.overlay.opaque) and
// writes its own ordering and headers, and no stock tool writes an OCI
// layout archive from local tars without a registry or a daemon.
//
//	testimage layer  -o OUT.tar [-subsecond] DIR
//	testimage oci    -o OUT.oci.tar -name REF -compression gzip|zstd \
//	                 -created RFC3339 -layer A.tar -history TEXT [-layer ... -history ...]
//	testimage verify ARCHIVE [LAYER.tar ...]
//
// It never touches the host outside the paths it is given; outputs appear
// atomically (temp file in the same directory, fsync, rename).
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "layer":
		err = layerCmd(os.Args[2:])
	case "oci":
		err = ociCmd(os.Args[2:])
	case "verify":
		err = verifyCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testimage %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testimage layer|oci|verify ... (see the package doc)")
	os.Exit(2)
}
