#!/usr/bin/env python3
"""Offer update -> visible on the read API, while a background load of offer updates runs.

    bench/offer_visibility.py --base http://127.0.0.1:18080 --token T \
        --products 100000 --rate 10000 --seconds 20

Writers POST /admin/offers batches (500 offers to random seeded products) at --rate
offers/s. A prober, every 20 ms, writes one offer with a unique price on a hot product
(P0000001..P0000100, warmed into the cache first) and polls
GET /products/{id}/offers?market=ZZ until the new price shows. It reports the achieved
background rate and visibility latency percentiles, measured from sending the write and
from its 2xx. Standard library only.
"""
import argparse, http.client, json, random, statistics, threading, time, urllib.parse


def conn(base):
    u = urllib.parse.urlparse(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def post(c, token, body):
    c.request("POST", "/admin/offers", body=json.dumps(body),
              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    if r.status != 200:
        raise RuntimeError(f"POST /admin/offers -> {r.status}")


def offer(pid, merchant, market, price):
    return {"product_id": pid, "merchant_id": merchant, "market": market,
            "price": {"amount_minor": price, "currency": "EUR"}, "stock": 5}


def writer(args, stop, counter, lock, share):
    c = conn(args.base)
    per_batch = 500
    interval = per_batch / share
    next_at = time.monotonic()
    while not stop.is_set():
        batch = [offer(f"P{random.randint(1, args.products):07d}", f"M{random.randint(1, 8):03d}",
                       random.choice(["DE", "FR", "IT", "NL"]), random.randint(1000, 99999))
                 for _ in range(per_batch)]
        post(c, args.token, {"offers": batch})
        with lock:
            counter[0] += per_batch
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="http://127.0.0.1:18080")
    ap.add_argument("--token", required=True)
    ap.add_argument("--products", type=int, default=100000)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--writers", type=int, default=4)
    args = ap.parse_args()

    probe = conn(args.base)
    hot = [f"P{i:07d}" for i in range(1, 101)]
    for pid in hot:  # the probed documents are hot: in the read cache before we start
        post(probe, args.token, {"offers": [offer(pid, "M999", "ZZ", 1)]})
    time.sleep(0.5)
    for pid in hot:
        probe.request("GET", f"/products/{pid}/offers?market=ZZ"); probe.getresponse().read()

    stop, lock, counter = threading.Event(), threading.Lock(), [0]
    threads = [threading.Thread(target=writer, args=(args, stop, counter, lock, args.rate / args.writers), daemon=True)
               for _ in range(args.writers)]
    for t in threads:
        t.start()
    from_send, from_ack, timeouts = [], [], 0
    started = time.monotonic()
    price = 100000
    while time.monotonic() - started < args.seconds:
        pid = random.choice(hot)
        price += 1
        t0 = time.monotonic()
        post(probe, args.token, {"offers": [offer(pid, "M999", "ZZ", price)]})
        t1 = time.monotonic()
        while True:
            probe.request("GET", f"/products/{pid}/offers?market=ZZ")
            r = probe.getresponse(); body = r.read()
            if r.status == 200 and f'"amount_minor":{price},' in body.decode():
                t2 = time.monotonic()
                from_send.append((t2 - t0) * 1000); from_ack.append((t2 - t1) * 1000)
                break
            if time.monotonic() - t1 > 5:
                timeouts += 1
                break
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    stop.set()
    achieved = counter[0] / elapsed
    print(f"background offer updates applied: {achieved:.0f}/s (target {args.rate}/s)")
    print(f"probes: {len(from_send)}, timeouts (>5 s): {timeouts}")
    for name, xs in (("from send", from_send), ("from 2xx", from_ack)):
        if xs:
            print(f"visible {name}: p50 {pct(xs, 50):.1f} ms, p90 {pct(xs, 90):.1f} ms, "
                  f"p99 {pct(xs, 99):.1f} ms, max {max(xs):.1f} ms, mean {statistics.mean(xs):.1f} ms")


if __name__ == "__main__":
    main()
