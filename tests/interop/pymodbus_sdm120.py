#!/usr/bin/env python3
"""An Eastron SDM120 as pymodbus serves it: the labhours interop peer.

Usage:
    pymodbus_sdm120.py tcp PORT [UNITS]      Modbus TCP on 127.0.0.1:PORT
    pymodbus_sdm120.py rtu DEVICE [UNITS]    Modbus RTU on a serial device (9600 8N1)

Unit id 1 (or each of unit ids 1..UNITS, e.g. four meters behind one
RTU-to-TCP gateway for scripts/measure-agent.sh) answers function 04 (read
input registers) with 230.0 V, 5.0 A, 1150.0 W and 42.5 kWh as big-endian
float32, at the addresses of Eastron's SDM120-Modbus protocol (register
3xxxx is protocol address xxxx - 1). The floats are packed here with struct,
not by pymodbus, so the byte order under test is written down in this file.
Prints "ready" once it is listening.
"""

import asyncio
import struct
import sys

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SDM120_INPUT_REGISTERS = {
    30001: 230.0,  # voltage, V
    30007: 5.0,  # current, A
    30013: 1150.0,  # active power, W
    30343: 42.5,  # total active energy, kWh
}


def float32_abcd(value):
    """The two registers of a big-endian IEEE-754 float32."""
    return list(struct.unpack(">HH", struct.pack(">f", value)))


def sdm120(unit=1):
    inputs = [
        SimData(address=register - 30001, values=float32_abcd(value), datatype=DataType.REGISTERS)
        for register, value in SDM120_INPUT_REGISTERS.items()
    ]
    # Separate blocks (coils, discrete inputs, holding, input registers), as
    # on the meter. A block may not be empty: the others get one placeholder.
    no_bits = [SimData(address=0, values=False, datatype=DataType.BITS)]
    no_registers = [SimData(address=0, datatype=DataType.INVALID)]
    return SimDevice(id=unit, simdata=(no_bits, no_bits, no_registers, inputs))


async def main(mode, where, units=1):
    devices = [sdm120(unit) for unit in range(1, units + 1)]
    if mode == "tcp":
        server = ModbusTcpServer(devices, framer=FramerType.SOCKET, address=("127.0.0.1", int(where)))
    elif mode == "rtu":
        server = ModbusSerialServer(
            devices, framer=FramerType.RTU, port=where, baudrate=9600, bytesize=8, parity="N", stopbits=1
        )
    else:
        raise SystemExit(__doc__)
    await server.serve_forever(background=True)
    print("ready", flush=True)
    await server.serving


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 1))
