"""The Python kubernetes client's port-forward (a WebSocket with the v4 channel
protocol, as kube-rs also speaks it) to pod fwd in the default namespace: one page
through each of ports 8080 and 8081, and the error of a port nothing listens on."""
import time

from kubernetes import client, config
from kubernetes.stream import portforward

config.load_kube_config()
v1 = client.CoreV1Api()


def fetch(port):
    pf = portforward(v1.connect_get_namespaced_pod_portforward, "fwd", "default", ports=str(port))
    s = pf.socket(port)
    s.setblocking(True)
    try:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # a refused port may be closed before the request is sent
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    s.close()
    # The client's reader thread records the error channel on its own schedule: a
    # refused port's error may land just after its data socket closed (seconds later
    # on a loaded CI machine: 5 s was once not enough).
    err = pf.error(port)
    for _ in range(150):
        if err is not None or not data == b"":
            break
        time.sleep(0.1)
        err = pf.error(port)
    return data, err


for port, want in ((8080, b"public\n"), (8081, b"loopback\n")):
    data, err = fetch(port)
    assert err is None, (port, err)
    assert data.split(b"\r\n\r\n", 1)[1] == want, (port, data)

data, err = fetch(9999)
assert data == b"", data
assert "error forwarding port 9999" in (err or ""), err
print("ok")
