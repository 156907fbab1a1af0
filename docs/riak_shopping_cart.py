"""The DDIA shopping cart (Kleppmann, fig. 5-13) through the official Riak Python client,
against a 3-node `quorumkv dev`, with one node killed midway.

Two shoppers share a cart. Each reads it, adds an item and writes it back with the vclock it
read; when both read before either writes, the cluster keeps both carts as siblings, and the
next read merges them with the client's sibling resolver (a union of the items). Nothing
either shopper added is lost, though a node dies in the middle.

    scripts/riak-client-tests.sh        # once: makes the venv with the client
    target/riak-client/venv/bin/python docs/riak_shopping_cart.py target/release/quorumkv
"""

import os
import re
import signal
import subprocess
import sys
import tempfile

import riak

BASE_PORT = 8500


def union_of_carts(obj):
    """Riak sibling resolver: one sibling holding every item of every live sibling."""
    items = set()
    for sibling in obj.siblings:
        if sibling.exists and sibling.data:
            items.update(sibling.data)
    keep = obj.siblings[0]
    keep.data = sorted(items)
    keep.content_type = "application/json"
    obj.siblings = [keep]


def shopper(port, resolver=union_of_carts):
    client = riak.RiakClient(protocol="http", nodes=[{"host": "127.0.0.1", "http_port": port}])
    if resolver:
        client.resolver = resolver
    return client.bucket("carts")


def add(cart_object, item):
    cart_object.data = sorted(set(cart_object.data or []) | {item})
    cart_object.content_type = "application/json"
    cart_object.store()


def main(binary):
    data = tempfile.mkdtemp(prefix="quorumkv-cart-")
    dev = subprocess.Popen(
        [binary, "dev", "--nodes", "3", "--base-port", str(BASE_PORT), "--data-dir", data],
        stdout=subprocess.PIPE, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pids = {}
    for line in dev.stdout:
        found = re.match(r"\s+(n\d)\s+\S+\s+pid (\d+)", line)
        if found:
            pids[found.group(1)] = int(found.group(2))
        if len(pids) == 3:
            break
    try:
        one, two = shopper(BASE_PORT + 1), shopper(BASE_PORT + 2)
        one.allow_mult = True  # keep concurrent carts as siblings (a bucket property)

        # Both read the empty cart, then both write: two siblings.
        cart_1, cart_2 = one.get("ddia"), two.get("ddia")
        add(cart_1, "milk")
        add(cart_2, "eggs")
        unresolved = shopper(BASE_PORT + 3, resolver=None).get("ddia")
        print("siblings after two concurrent adds:", sorted(s.data for s in unresolved.siblings))

        os.kill(pids["n3"], signal.SIGKILL)
        print("killed n3")

        # Each reads (the resolver merges the siblings), adds, writes back with the vclock.
        cart_1 = one.get("ddia")
        add(cart_1, "flour")
        cart_2 = two.get("ddia")
        add(cart_2, "ham")
        cart_1, cart_2 = one.get("ddia"), two.get("ddia")
        add(cart_1, "bacon")
        add(cart_2, "coffee")

        final = two.get("ddia", r=2)
        print("final cart, read from n2 with r=2:", final.data)
        expected = ["bacon", "coffee", "eggs", "flour", "ham", "milk"]
        assert final.data == expected, f"expected {expected}, got {final.data}"
        print("every item either shopper added is in the cart")
    finally:
        dev.stdin.close()  # dev stops its nodes when its stdin closes or on Ctrl-C
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/release/quorumkv")
