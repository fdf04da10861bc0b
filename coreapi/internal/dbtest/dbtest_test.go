package dbtest
import ("testing";"context")
func TestNew(t *testing.T){ d:=New(t); var n int; if err:=d.Pool.QueryRow(context.Background(),"select count(*) from tenants").Scan(&n);err!=nil{t.Fatal(err)} }
