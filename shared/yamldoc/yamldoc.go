// Package yamldoc checks that a YAML file an operator writes (the proxy's
// rules file, coreapi's permission catalog) holds one document: a YAML
// decoder reads the first and drops the others without a word.
package yamldoc

import (
	"bytes"
	"errors"
	"io"

	yamlv2 "go.yaml.in/yaml/v2"
)

// ErrMany is Single's error for a file of more than one document.
var ErrMany = errors.New("more than one YAML document (---): only the first would be read; write one")

// Single returns ErrMany when b holds a second non-empty document, and a
// later document's decoding error as it is. An empty document (a leading
// or trailing "---") is none, and a first document that does not decode
// is left to the caller's parse to report.
func Single(b []byte) error {
	d := yamlv2.NewDecoder(bytes.NewReader(b))
	var doc any
	if err := d.Decode(&doc); err != nil {
		return nil // none at all, or one the parse reports
	}
	for {
		doc = nil
		err := d.Decode(&doc)
		switch {
		case errors.Is(err, io.EOF):
			return nil
		case err != nil:
			return err
		case doc != nil:
			return ErrMany
		}
	}
}
