package docblock

import "testing"

func TestParse(t *testing.T) {
	text := "intro\n\n```yaml\na: 1\n  b: 2\n```\n\n1. item\n\n   ```sh\n   echo hi\n     indented\n   ```\n````\nx\n```\n````\n"
	got, err := Parse("doc.md", text)
	if err != nil {
		t.Fatal(err)
	}
	want := []Block{
		{File: "doc.md", Line: 3, Lang: "yaml", Text: "a: 1\n  b: 2\n"},
		{File: "doc.md", Line: 10, Lang: "sh", Text: "echo hi\n  indented\n"},
		{File: "doc.md", Line: 14, Lang: "", Text: "x\n```\n"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d blocks %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("block %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := Parse("doc.md", "```sh\necho\n"); err == nil {
		t.Error("an unclosed block: no error")
	}
}

// TestDocs: the repository's docs hold blocks of every language the doc
// tests look for (a moved file or a broken parse shows here first).
func TestDocs(t *testing.T) {
	blocks, err := Docs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, lang := range []string{"yaml", "sh", "go", "text"} {
		if len(Lang(blocks, lang)) == 0 {
			t.Errorf("no %s block in README.md and docs/*.md", lang)
		}
	}
}
