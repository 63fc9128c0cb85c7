package erofs

// ConvertOptions tunes a conversion. The zero value is the default.
type ConvertOptions struct {
	// MaxImageSize, when > 0, fails the conversion once the image would
	// exceed this many bytes (a defence against decompression bombs).
	MaxImageSize int64
}

// ConvertStats reports what a conversion produced.
type ConvertStats struct {
	Entries    int64    // tar entries or directory entries read
	Inodes     int64    // inodes written
	ImageBytes int64    // size of the image
	DataBytes  int64    // bytes of regular file data written
	Skipped    []string // entries not representable (sockets in ConvertDir), with why
}
