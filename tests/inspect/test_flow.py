"""The flow table: direction, state, idle timeout and LRU cap."""

from __future__ import annotations

from appliance.inspect.decode import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN, Layer
from appliance.inspect.flow import Flow, FlowTable, flow_key, reverse_tcp_key

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def packet(
    src: bytes, dst: bytes, sport: int, dport: int, flags: int = 0, proto: int = PROTO_TCP
) -> Layer:
    layer = Layer(4, src, dst, proto, 0)
    layer.sport, layer.dport, layer.flags = sport, dport, flags
    return layer


def test_direction_and_handshake() -> None:
    table = FlowTable()
    flow, to_server = table.lookup(packet(A, B, 1000, 80, TCP_SYN), 0.0)
    assert to_server and not flow.established
    same, to_server = table.lookup(packet(B, A, 80, 1000, TCP_SYN | TCP_ACK), 0.1)
    assert same is flow and not to_server and not flow.established
    table.lookup(packet(A, B, 1000, 80, TCP_ACK), 0.2)
    assert flow.established and flow.packets_to_server == 2 and flow.packets_to_client == 1
    assert len(table) == 1


def test_syn_ack_first_makes_its_receiver_the_client() -> None:
    table = FlowTable()
    flow, to_server = table.lookup(packet(B, A, 80, 1000, TCP_SYN | TCP_ACK), 0.0)
    assert not to_server and flow.key == flow_key(A, B, 1000, 80, PROTO_TCP)
    assert flow.client == (A, 1000)


def test_udp_established_after_both_directions() -> None:
    table = FlowTable()
    flow, _ = table.lookup(packet(A, B, 5000, 53, proto=PROTO_UDP), 0.0)
    assert not flow.established
    table.lookup(packet(B, A, 53, 5000, proto=PROTO_UDP), 0.0)
    assert flow.established


def test_idle_flows_expire() -> None:
    table = FlowTable(idle_timeout=10.0)
    table.lookup(packet(A, B, 1, 2), 0.0)
    table.lookup(packet(A, B, 3, 4), 5.0)
    table.lookup(packet(A, B, 5, 6), 12.0)
    assert len(table) == 2 and table.expired == 1


def test_reused_tuple_after_idle_timeout_is_a_new_flow() -> None:
    table = FlowTable(idle_timeout=10.0)
    flow, _ = table.lookup(packet(A, B, 1, 2, TCP_SYN), 0.0)
    first_id = flow.flow_id
    again, to_server = table.lookup(packet(A, B, 1, 2, TCP_SYN), 50.0)
    assert to_server and again.first_ts == 50.0 and again.flow_id != first_id


def test_lru_cap() -> None:
    table = FlowTable(max_flows=3)
    for port in range(10):
        table.lookup(packet(A, B, port, 80), float(port))
    table.lookup(packet(A, B, 7, 80), 10.0)  # touched: now the most recent
    table.lookup(packet(A, B, 99, 80), 11.0)
    assert len(table) == 3 and table.evicted == 8
    assert {flow.client[1] for flow in table.flows.values()} == {9, 7, 99}
    assert len(table.index) == 6  # each flow under both directions' keys


def hatch_plain(key: bytes, reverse: bytes, embryo: tuple[float, int, int]) -> Flow:
    assert reverse == reverse_tcp_key(key)
    flow = Flow(key, reverse, PROTO_TCP, embryo[0])
    flow.packets_to_server = 1
    return flow


def test_an_embryo_hatches_from_either_direction_in_its_place() -> None:
    table = FlowTable(max_flows=3)
    table.hatch = hatch_plain
    table.lookup(packet(A, B, 1, 80, TCP_SYN), 0.0)
    table.add_embryo(flow_key(A, B, 2, 80, PROTO_TCP), 1.0, 100, 0)
    table.add_embryo(flow_key(A, B, 3, 80, PROTO_TCP), 2.0, 200, 0)
    assert table.embryos == 2 and len(table) == 3 and len(table.index) == 2
    assert [f.client[1] for f in table.records()] == [1, 2, 3]
    assert table.embryos == 2  # records() leaves embryos as they are
    flow, to_server = table.lookup(packet(B, A, 80, 2, TCP_SYN | TCP_ACK), 1.5)
    assert not to_server and flow.client == (A, 2) and flow.first_ts == 1.0
    assert flow.packets_to_server == 1 and flow.packets_to_client == 1
    assert table.embryos == 1 and list(table.flows)[1] == flow.key  # in the embryo's place
    table.add_embryo(flow_key(A, B, 4, 80, PROTO_TCP), 4.0, 300, 0)  # evicts port 1's flow
    assert table.evicted == 1 and len(table) == 3 and len(table.index) == 2
    assert [f.client[1] for f in table.records()] == [2, 3, 4]


def test_an_idle_embryo_expires() -> None:
    table = FlowTable(idle_timeout=10.0)
    table.hatch = hatch_plain
    table.add_embryo(flow_key(A, B, 1, 80, PROTO_TCP), 0.0, 1, 0)
    assert table.hatched(flow_key(B, A, 80, 1, PROTO_TCP), 20.0) is None
    assert table.expired == 1 and table.embryos == 0 and len(table) == 0
    table.add_embryo(flow_key(A, B, 2, 80, PROTO_TCP), 30.0, 1, 0)
    table.lookup(packet(A, B, 3, 80, TCP_SYN), 45.0)  # the sweep drops the idle embryo
    assert table.expired == 2 and table.embryos == 0 and len(table) == 1
