#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/ (small, committed): one or
a few well-formed inputs of each kind, so that libFuzzer starts from the shapes a real caller
sends. The layouts are those the entry points document (order_service::fuzzing,
status_client::serve::fuzzing)."""
import base64, hashlib, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    folder = os.path.join(HERE, "seeds", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def field(number, value):
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    value = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(value)) + value


item = field(1, "BOOK") + field(2, 2) + field(3, 1250)
create = field(1, "first-order") + field(2, "c-42") + field(3, item) + field(4, "EUR")
bad_item = field(1, "") + field(2, 0) + field(3, -5)
write("orders_request", "create", b"\x00" + create)
write("orders_request", "create-invalid", b"\x00" + field(1, "a b") + field(3, bad_item) + field(4, "eur"))
write("orders_request", "get", b"\x01" + field(1, "ord_0190f1a2b3c4d5e6f708192a3b4c5d6e"))
write("orders_request", "list", b"\x02" + field(1, 10) + field(3, 2) + field(4, "c-42"))
write("orders_request", "update", b"\x03" + field(1, "ord_1") + field(2, 2) + field(3, 1) + field(4, "pay-1") + field(5, "paid"))
write("orders_request", "watch", b"\x04" + field(1, "ord_1") + field(2, 5))


def tag(status, customer):
    """The filter tag of a page token (ListQuery::filter_tag)."""
    parts = [struct.pack(">i", status), customer.encode()]
    digest = hashlib.sha256(b"".join(struct.pack(">Q", len(p)) + p for p in parts)).digest()
    return digest[:4].hex()


def token(after, status, customer):
    return base64.urlsafe_b64encode(f"{after}.{tag(status, customer)}".encode()).rstrip(b"=")


write("page_token", "unfiltered", b"\x00" + token(5, 0, ""))
write("page_token", "filtered", bytes([2 | 4 << 3]) + b"c-42" + token(1234, 2, "c-42"))
write("page_token", "garbage", b"\x00garbage!")

sha = lambda t: hashlib.sha256(t.encode()).hexdigest()
write("tokens_file", "text", "\x00" + f"""[[token]]
principal = "writer"
scopes = ["orders.read", "orders.write"]
sha256 = "{sha('w-token')}"

[[token]]
principal = "reader"
scopes = ["orders.read"]
sha256 = "{sha('r-token')}"
""")
write("tokens_file", "text-bad-entry", "\x00" + '[[token]]\nprincipal = "p"\nscopes = []\nsha256 = "xyz"\n')
write("tokens_file", "entries", b"\x01" + bytes([3, 6, 8]) + b"writer" + b"w-token1" + bytes([1, 6, 8]) + b"reader" + b"r-token1")

for name, value in [("millis", "500m"), ("seconds", "2S"), ("largest", "99999999H"), ("nanos", "0n"), ("nine-digits", "123456789S")]:
    write("grpc_timeout", name, value)

create_json = '{"customerId":"c-42","currency":"EUR","items":[{"sku":"BOOK","quantity":2,"unitPriceCents":"1250"}]}'
write("gateway_body", "create", b"\x00\x00" + create_json.encode())
write("gateway_body", "create-keyed", b"\x02\x05" + b"key-1" + b'{"requestId":"key-1","customer_id":"c","currency":"EUR","items":[]}')
write("gateway_body", "update", bytes([1, 3 * 64]) + b"o-1" + b'{"status":"ORDER_STATUS_PAID","expectedVersion":"1","reason":"paid"}')
write("gateway_body", "update-keyed", bytes([3, 3 * 64 + 4]) + b"k-11" + b"o-1" + b'{"orderId":"o-2","status":2}')

write("last_event_id", "header", b"\x01\x02" + b"42")
write("last_event_id", "query", b"\x02\x00" + b"17")
write("last_event_id", "both", b"\x03\x03" + b" 7 " + b"x")
