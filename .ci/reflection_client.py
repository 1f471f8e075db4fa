#!/usr/bin/env python3
"""A gRPC client that knows nothing about kvstore but what server reflection
tells it: it lists the services, checks health, and does a Put and a Get with
message classes built from the reflected descriptors; then it reads the
google.rpc.ErrorInfo of a refused Put, as any client following the leader
would.

Usage: reflection_client.py HOST:PORT
"""
import signal
import sys
import time

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def unary(channel, pool, service, method):
    m = pool.FindServiceByName(service).FindMethodByName(method)
    req = message_factory.GetMessageClass(m.input_type)
    resp = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )
    return req, call, m


# Every call below has its own deadline; the reflection calls take none, so
# the whole client is bounded too.
WHOLE_RUN_SECONDS = 120
CALL_SECONDS = 10


def give_up(_signum, _frame):
    print(f"reflection client: no answer within {WHOLE_RUN_SECONDS} s", file=sys.stderr)
    sys.exit(1)


def main():
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(WHOLE_RUN_SECONDS)
    addr = sys.argv[1]
    channel = grpc.insecure_channel(addr)
    grpc.channel_ready_future(channel).result(timeout=20)
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    print("services:", ", ".join(sorted(services)))
    for needed in ("kvstore.v1.KV", "kvstore.v1.Cluster", "kvstore.v1.Maintenance", "grpc.health.v1.Health"):
        assert needed in services, f"{needed} is not listed by reflection"
    pool = DescriptorPool(db)

    req, check, m = unary(channel, pool, "grpc.health.v1.Health", "Check")
    status_enum = m.output_type.fields_by_name["status"].enum_type
    deadline = time.time() + 20
    while True:
        status = status_enum.values_by_number[
            check(req(service=""), timeout=CALL_SECONDS).status
        ].name
        if status == "SERVING" or time.time() > deadline:
            break
        time.sleep(0.2)
    print("health:", status)
    assert status == "SERVING", status

    put_req, put, _ = unary(channel, pool, "kvstore.v1.KV", "Put")
    resp = put(put_req(key=b"reflection/key", value=b"hello from python"), timeout=CALL_SECONDS)
    print("put revision:", resp.header.revision)
    get_req, get, _ = unary(channel, pool, "kvstore.v1.KV", "Get")
    got = get(get_req(key=b"reflection/key"), timeout=CALL_SECONDS)
    print("get:", got.kv.value.decode())
    assert got.kv.value == b"hello from python"
    assert got.kv.mod_revision == resp.header.revision

    # An error carries a google.rpc.ErrorInfo (the standard richer error
    # model, googleapis-common-protos): its reason, and the leader to go to.
    try:
        put(put_req(key=b""), timeout=CALL_SECONDS)
        raise AssertionError("a put with an empty key was accepted")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.code()
        trailer = dict(err.trailing_metadata()).get("grpc-status-details-bin")
        assert trailer, "the error has no grpc-status-details-bin trailer"
        details = status_pb2.Status.FromString(trailer).details
        infos = [
            error_details_pb2.ErrorInfo.FromString(d.value)
            for d in details
            if d.type_url.endswith("/google.rpc.ErrorInfo")
        ]
        assert infos, f"no ErrorInfo among {details}"
        info = infos[0]
        print("error info:", info.reason, info.domain, dict(info.metadata))
        assert info.reason == "INVALID_ARGUMENT", info.reason
        assert info.domain == "kvstore.io", info.domain
        assert info.metadata["leader"] == "kvstore-0", dict(info.metadata)
    print("reflection client: OK")


if __name__ == "__main__":
    main()
