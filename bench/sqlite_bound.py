#!/usr/bin/env python3
"""The ingest ceiling of embedded SQLite on this machine, before any Surge code runs.

    bench/sqlite_bound.py [--products 40000] [--dir /tmp]

Inserts pre-built rows with Python's sqlite3 module (the C library does the work; the
rows are built before the clock starts) in 500-product transactions, WAL mode,
synchronous=full like Surge's default:

  source only  one 22 KB product row per product (nothing else);
  surge rows   what one product costs Surge's store: the 22 KB source row, its outbox
               entry, 12 offer rows with their 4 outbox entries, and 3 stored views
               (~5 KB gzip each).

Both numbers are upper bounds for "ingest, end to end to views": Surge must also parse,
validate, transform and compress every product. Standard library only.
"""
import argparse, os, random, sqlite3, tempfile, time


def fresh(path, synchronous):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("pragma journal_mode=wal")
    c.execute(f"pragma synchronous={synchronous}")
    c.execute("create table products (id text primary key, body blob not null, version integer not null, updated_at_ms integer not null)")
    c.execute("create table offers (product_id text not null, market text not null, merchant_id text not null, "
              "price_minor integer not null, currency text not null, stock integer not null, updated_at_ms integer not null, "
              "primary key (product_id, market, merchant_id)) without rowid")
    c.execute("create table outbox (position integer primary key autoincrement, kind text not null, product_id text not null, "
              "market text, created_at_ms integer not null)")
    c.execute("create table views (key text primary key, etag text not null, gzip blob not null)")
    return c


def run(path, n, full, synchronous):
    c = fresh(path, synchronous)
    rnd = random.Random(1)
    body = rnd.randbytes(11_000).hex().encode()  # 22 KB, incompressible like a real row
    gz = rnd.randbytes(5_000)
    batches = []
    for start in range(0, n, 500):
        ids = [f"P{i:07d}" for i in range(start, min(n, start + 500))]
        batches.append(ids)
    t = time.monotonic()
    for ids in batches:
        c.execute("begin")
        c.executemany("insert into products values (?, ?, 1, 0)", ((i, body) for i in ids))
        c.executemany("insert into outbox (kind, product_id, market, created_at_ms) values ('product', ?, null, 0)",
                      ((i,) for i in ids))
        if full:
            c.executemany("insert into offers values (?, ?, ?, 1999, 'EUR', 5, 0)",
                          ((i, m, f"M{k:03d}") for i in ids for m in ("DE", "FR", "IT", "NL") for k in range(3)))
            c.executemany("insert into outbox (kind, product_id, market, created_at_ms) values ('offers', ?, ?, 0)",
                          ((i, m) for i in ids for m in ("DE", "FR", "IT", "NL")))
            c.executemany("insert into views values (?, 'etag', ?)",
                          ((f"p:{f}:{i}", gz) for i in ids for f in ("std", "alpha", "beta")))
        c.execute("commit")
    dt = time.monotonic() - t
    c.close()
    return n / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--products", type=int, default=40_000)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--synchronous", default="full", choices=["full", "normal", "off"])
    args = ap.parse_args()
    path = os.path.join(args.dir, "surge-sqlite-bound.db")
    try:
        src = run(path, args.products, False, args.synchronous)
        full = run(path, args.products, True, args.synchronous)
    finally:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(path + suffix)
            except FileNotFoundError:
                pass
    print(f"sqlite ceiling (synchronous={args.synchronous}, {args.products} products, 500 per transaction): "
          f"source only {src:.0f} products/s; Surge's rows {full:.0f} products/s")


if __name__ == "__main__":
    main()
