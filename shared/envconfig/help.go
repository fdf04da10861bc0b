package envconfig

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// WriteHelp writes the table for a program's -help, a line for each
// variable: its name, its default (or what it is when it has none:
// required, one of a group, or "-") and its meaning, in table order.
func (t Table) WriteHelp(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, v := range t {
		def := v.Default
		switch {
		case def != "":
		case v.DefaultDoc != "":
			def = v.DefaultDoc
		case v.Required:
			def = "(required)"
		case v.OneOf != "":
			def = "(one of the " + v.OneOf + ")"
		default:
			def = "-"
		}
		if _, err := fmt.Fprintf(tw, "  %s\t%s\t%s\n", v.Name, def, v.Help); err != nil {
			return err
		}
	}
	return tw.Flush()
}
