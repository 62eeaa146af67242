"""Talks to a running health-agent with Python grpcio: the standard health check, server
reflection, and ListDevices through stubs generated from proto/. Exits non-zero on any
mismatch, printing what it saw."""
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from health.v1 import agent_pb2, agent_pb2_grpc, types_pb2

target = sys.argv[1]
# grpc-core sends the socket path as :authority on unix: targets, which the agent's HTTP/2
# stack (h2) rejects as malformed (RST_STREAM PROTOCOL_ERROR). "localhost" is the convention
# grpc-go, Kubernetes and tonic use for Unix sockets; grpcurl needs `-authority localhost` too.
channel = grpc.insecure_channel(target, options=[("grpc.default_authority", "localhost")])
grpc.channel_ready_future(channel).result(timeout=10)

health = health_pb2_grpc.HealthStub(channel)
for service in ("", "health.v1.Agent"):
    resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        sys.exit(f"health check of {service!r}: {name}, expected SERVING")
print("health: SERVING")

# Reflection: grpcurl-style discovery must find the Agent service.
# grpcio-reflection's client speaks v1alpha, which the agent serves beside v1.
services = ProtoReflectionDescriptorDatabase(channel).get_services()
if "health.v1.Agent" not in services:
    sys.exit(f"reflection lists {services}, expected health.v1.Agent")
print("reflection:", ", ".join(sorted(services)))

agent = agent_pb2_grpc.AgentStub(channel)
devices = agent.ListDevices(agent_pb2.ListDevicesRequest(), timeout=5).devices
kinds = sorted(types_pb2.DeviceKind.Name(d.identity.kind) for d in devices)
expected = sorted(
    ["DEVICE_KIND_LOIHI2", "DEVICE_KIND_SPINNAKER", "DEVICE_KIND_PHOTONIC", "DEVICE_KIND_ANALOG_CROSSBAR"]
)
print(f"devices: {len(devices)} ({', '.join(kinds)})")
if kinds != expected:
    sys.exit(f"device kinds {kinds}, expected {expected}")
for d in devices:
    temps = [r.value for r in d.readings if r.quantity == types_pb2.TEMPERATURE_CELSIUS]
    if not temps:
        sys.exit(f"{d.identity.id}: no temperature reading")
    print(f"  {d.identity.id}: {types_pb2.HealthState.Name(d.state)} {max(temps):.1f} degC")
