package mailtest

import "mime"

type mimeDecoder struct{ d mime.WordDecoder }

// header decodes RFC 2047 encoded words (a subject with non-ASCII text).
func (m *mimeDecoder) header(s string) string {
	if out, err := m.d.DecodeHeader(s); err == nil {
		return out
	}
	return s
}
