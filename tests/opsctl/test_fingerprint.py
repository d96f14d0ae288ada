from backend.ops.fingerprint import fingerprint, normalise, operation


def test_literals_and_placeholders_collapse():
    a = fingerprint("SELECT * FROM t WHERE id = 5 AND name = 'x'")
    b = fingerprint("select * from t where id = %s and name = %s")
    assert a == b and a[1] == "SELECT * FROM t WHERE id = ? AND name = ?"


def test_in_lists_of_any_length_are_one_fingerprint():
    ids = {fingerprint(f"SELECT * FROM t WHERE id IN ({', '.join(['%s'] * n)})")[0]
           for n in (1, 2, 7, 300)}  # fmt: skip
    assert len(ids) == 1
    assert "IN (...)" in normalise("SELECT 1 FROM t WHERE x IN ($1, $2, $3)")


def test_different_shapes_differ_and_identifiers_survive():
    assert fingerprint("SELECT a FROM t1")[0] != fingerprint("SELECT a FROM t2")[0]
    assert (
        normalise('SELECT "col1" FROM "t2" WHERE "x" = 3')
        == 'SELECT "col1" FROM "t2" WHERE "x" = ?'
    )
    assert len(fingerprint("SELECT 1")[0]) == 16


def test_multi_row_values_collapse_and_operation():
    one = fingerprint("INSERT INTO t (a, b) VALUES (%s, %s)")
    many = fingerprint("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s), (%s, %s)")
    assert one == many
    assert operation("  update t set a = 1") == "UPDATE"
