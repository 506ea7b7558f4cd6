"""Online feature lookups with pyarrow.flight: the features of some users, now, in one round trip.

Run against a server (`cargo run -- serve`) after creating an online feature view, e.g.:

    CREATE ENTITY user (user_id BIGINT);
    CREATE TABLE spend (user_id BIGINT, ts TIMESTAMP, amount DOUBLE);
    INSERT INTO spend VALUES (42, now(), 12.5), (43, now(), 3.0);
    CREATE FEATURE VIEW user_spend ENTITY user EVENT TIME ts WITH (online = true)
      AS SELECT user_id, ts, amount FROM spend;

    python examples/online_lookup.py grpc://127.0.0.1:50051 user_spend 42 43 44
"""
import json
import sys

import pyarrow.flight as flight

LOOKUP_TYPE = "type.googleapis.com/flywheel.OnlineLookup"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def lookup_ticket(features: list[str], keys: list) -> flight.Ticket:
    """A lookup ticket: a protobuf `Any` (field 1: type URL, field 2: JSON request), by hand."""
    type_url = LOOKUP_TYPE.encode()
    value = json.dumps({"features": features, "keys": keys}).encode()
    any_bytes = b"\x0a" + _varint(len(type_url)) + type_url + b"\x12" + _varint(len(value)) + value
    return flight.Ticket(any_bytes)


def lookup(client: flight.FlightClient, features: list[str], keys: list):
    """One DoGet: a table with a row per key, in request order."""
    return client.do_get(lookup_ticket(features, keys)).read_all()


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    uri, view, *ids = sys.argv[1:]
    client = flight.connect(uri)
    table = lookup(client, [view], [[int(i)] for i in ids])
    for row in table.to_pylist():
        print(row)


if __name__ == "__main__":
    main()
