package httpapi

// MapPage turns a page of stored rows into a page of their response
// bodies (f converts one row), keeping the cursor and the total.
func MapPage[T, R any](p ListResponse[T], f func(T) R) ListResponse[R] {
	out := ListResponse[R]{NextCursor: p.NextCursor, Total: p.Total}
	if p.Data != nil {
		out.Data = make([]R, len(p.Data))
	}
	for i, row := range p.Data {
		out.Data[i] = f(row)
	}
	return out
}
