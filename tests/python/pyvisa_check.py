"""Drives an SCPI TEC controller (the simulator's, or a real one) with pyvisa and the pyvisa-py
backend, as lab software would: *IDN?, TEC:T? against the setpoint, and the error queue after
an unknown command. Prints one line per check; exits non-zero with a message on any mismatch."""
import sys

import pyvisa

if len(sys.argv) != 2 or ":" not in sys.argv[1]:
    sys.exit("usage: pyvisa_check.py HOST:PORT")
host, port = sys.argv[1].rsplit(":", 1)
host = host.strip("[]")
resource = f"TCPIP::{host}::{port}::SOCKET"

rm = pyvisa.ResourceManager("@py")
try:
    inst = rm.open_resource(resource, read_termination="\n", write_termination="\n", timeout=2000)
except Exception as e:  # pyvisa raises several types for an unreachable socket
    sys.exit(f"open {resource}: {e}")

try:
    idn = inst.query("*IDN?").strip()
    fields = [f.strip() for f in idn.split(",")]
    if len(fields) != 4 or not fields[0]:
        sys.exit(f"*IDN? answered {idn!r}: expected four comma-separated fields")
    print(f"idn: {idn}")

    setpoint = float(inst.query("TEC:SET:T?"))
    temperature = float(inst.query("TEC:T?"))
    if abs(temperature - setpoint) > 1.0:
        sys.exit(f"TEC:T? {temperature} degC is more than 1 degC from setpoint {setpoint} degC")
    print(f"temperature: {temperature:.3f} degC (setpoint {setpoint:.3f})")

    # Unknown commands are not answered; they only add to the error queue.
    inst.write("NOT:A:COMMAND 1")
    err = inst.query("SYST:ERR?").strip()
    if not err.startswith("-113"):
        sys.exit(f"SYST:ERR? after an unknown command answered {err!r}: expected -113,...")
    print(f"error queue: {err}")
    empty = inst.query("SYST:ERR?").strip()
    code = empty.split(",", 1)[0].strip()
    if int(code) != 0:
        sys.exit(f"second SYST:ERR? answered {empty!r}: expected 0,\"No error\"")
    print(f"error queue then: {empty}")
except (pyvisa.errors.VisaIOError, OSError) as e:
    # pyvisa-py connects lazily: a refused connection surfaces on the first write.
    sys.exit(f"{resource}: {e}")
except ValueError as e:
    sys.exit(f"{resource}: not a number: {e}")
finally:
    try:
        inst.close()
        rm.close()
    except Exception:  # closing a socket that never opened; the check's verdict stands
        pass
print("pyvisa: all checks passed")
