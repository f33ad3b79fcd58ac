#!/usr/bin/env python3
"""Interop VM manager: boots Debian trixie VMs (strongSwan + FRR) under qemu/TCG inside a network namespace
and runs commands in them through a virtio-serial exec agent. Called through vm.sh; see README.md.

State of a VM lives in $IX_CACHE/vms/NAME/ (qemu pid file, agent socket, console log, qcow2 overlay).
"""
import argparse, base64, fcntl, json, os, shlex, signal, socket, subprocess, sys, time, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("IX_CACHE", "/var/tmp/dmvpnd-interop")
VMS = os.path.join(CACHE, "vms")
CONF = os.path.join(HERE, "conf")


def die(msg, code=1):
    print("vm: " + msg, file=sys.stderr)
    sys.exit(code)


def sh(argv, check=True, **kw):
    r = subprocess.run(argv, **kw)
    if check and r.returncode != 0:
        die("command failed (%d): %s" % (r.returncode, " ".join(map(shlex.quote, argv))))
    return r


def vmdir(name):
    return os.path.join(VMS, name)


def image_dir(script=None):
    r = subprocess.run([script or os.path.join(HERE, "build-image.sh")], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        die("image build failed")
    return r.stdout.strip().splitlines()[-1]


def qemu_pid(name):
    """PID of the VM's qemu, or None. Checked against /proc so a stale pid file never names a stranger."""
    try:
        with open(os.path.join(vmdir(name), "qemu.pid")) as f:
            pid = int(f.read().strip())
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read()
    except (OSError, ValueError):
        return None
    return pid if vmdir(name).encode() + b"/overlay.qcow2" in cmd else None


# ---------------------------------------------------------------------------------------------- agent

class Agent:
    def __init__(self, name):
        self.name = name
        self.sock_path = os.path.join(vmdir(name), "agent.sock")
        self.lock = open(os.path.join(vmdir(name), "agent.lock"), "w")

    def request(self, req, timeout):
        """Send one request, return its reply (dict). One client at a time: qemu's chardev serves one."""
        req = dict(req, id=uuid.uuid4().hex)
        deadline = time.monotonic() + timeout
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            s.connect(self.sock_path)
            try:
                s.sendall((json.dumps(req) + "\n").encode())
                buf = b""
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no reply from agent")
                    s.settimeout(left)
                    chunk = s.recv(65536)
                    if not chunk:
                        raise ConnectionError("agent socket closed")
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        try:
                            rep = json.loads(line)
                        except ValueError:
                            continue
                        if rep.get("id") == req["id"]:  # replies to abandoned requests are skipped
                            return rep
            finally:
                s.close()
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)

    def ping(self, timeout=2.0):
        try:
            return self.request({"op": "ping"}, timeout).get("rc") == 0
        except (OSError, TimeoutError, ConnectionError):
            return False

    def exec(self, argv, timeout=120, stdin=b"", env=None):
        rep = self.request({"op": "exec", "argv": argv, "timeout": timeout, "env": env or {},
                            "stdin": base64.b64encode(stdin).decode()}, timeout + 15)
        return rep["rc"], base64.b64decode(rep.get("out", "")), base64.b64decode(rep.get("err", ""))

    def put(self, path, data, mode=0o644):
        rep = self.request({"op": "put", "path": path, "mode": mode,
                            "data": base64.b64encode(data).decode()}, 60)
        if rep.get("rc") != 0:
            die("%s: put %s failed: %s" % (self.name, path, base64.b64decode(rep.get("err", "")).decode()))


# ---------------------------------------------------------------------------------------------- commands

def cmd_image(a):
    print(image_dir())


def cmd_up(a):
    d = vmdir(a.name)
    if qemu_pid(a.name):
        die("%s already running (vm.sh down %s first)" % (a.name, a.name))
    img = image_dir(a.image_script)
    sh(["rm", "-rf", d])
    os.makedirs(d)
    overlay = os.path.join(d, "overlay.qcow2")
    sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", os.path.join(img, "base.qcow2"), overlay])
    tap = a.tap or ("ixt-" + a.name)[:15]
    ns = ["ip", "netns", "exec", a.netns]
    if sh(ns + ["ip", "link", "show", a.bridge], check=False, stdout=subprocess.DEVNULL,
          stderr=subprocess.DEVNULL).returncode != 0:
        die("bridge %s not found in netns %s (create the topology with rig.sh first)" % (a.bridge, a.netns))
    sh(ns + ["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    sh(ns + ["ip", "link", "set", tap, "master", a.bridge, "up"])
    mac = a.mac or "52:54:00:%02x:%02x:%02x" % tuple(os.urandom(3))
    cmdline = "console=ttyS0 root=/dev/vda rw init=%s net.ifnames=0 quiet loglevel=4 panic=-1 ix.name=%s" % (
        a.init, a.name)
    if a.ip:
        cmdline += " ix.ip=" + a.ip
    if a.gw:
        cmdline += " ix.gw=" + a.gw
    meta = {"name": a.name, "netns": a.netns, "bridge": a.bridge, "tap": tap, "ip": a.ip, "image": img,
            "role": a.role}
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f)
    qemu = ns + [
        "qemu-system-x86_64", "-name", a.name, "-machine", "q35", "-accel", "tcg,thread=single",
        "-cpu", os.environ.get("IX_CPU", "max"), "-smp", "1", "-m", str(a.mem), "-nodefaults", "-display", "none",
        "-kernel", os.path.join(img, "vmlinuz"), "-initrd", os.path.join(img, "initrd.img"),
        "-append", cmdline,
        "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % overlay,
        "-netdev", "tap,id=wan,ifname=%s,script=no,downscript=no" % tap,
        "-device", "virtio-net-pci,netdev=wan,mac=%s" % mac,
        "-device", "virtio-rng-pci",
        "-device", "virtio-serial-pci",
        "-chardev", "socket,id=agent,path=%s,server=on,wait=off" % os.path.join(d, "agent.sock"),
        "-device", "virtserialport,chardev=agent,name=dmvpn.agent",
        "-serial", "file:" + os.path.join(d, "console.log"),
        "-pidfile", os.path.join(d, "qemu.pid"), "-daemonize",
    ]
    t0 = time.monotonic()
    sh(qemu)
    agent = Agent(a.name)
    while not agent.ping():
        if not qemu_pid(a.name):
            die("%s: qemu exited during boot; console log:\n%s" % (a.name, tail(os.path.join(d, "console.log"))))
        if time.monotonic() - t0 > a.boot_timeout:
            die("%s: agent not up after %ds; console log:\n%s"
                % (a.name, a.boot_timeout, tail(os.path.join(d, "console.log"))))
        time.sleep(1)
    boot = time.monotonic() - t0
    with open(os.path.join(d, "boot_seconds"), "w") as f:
        f.write("%.1f\n" % boot)
    print("vm: %s up in %.1fs (pid %d, netns %s, tap %s, eth0 %s)" % (a.name, boot, qemu_pid(a.name), a.netns,
                                                                      tap, a.ip or "-"), file=sys.stderr)
    if a.role:
        configure(a)


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no console log)"


def render(path, params):
    with open(path) as f:
        text = f.read()
    for k, v in params.items():
        text = text.replace("@%s@" % k, str(v))
    if "@" in text.replace("@any", ""):
        for tok in text.split("@")[1::2]:
            if tok.isupper():
                die("template %s: no value for @%s@" % (path, tok))
    return text.encode()


def configure(a):
    """Push the role's rendered templates into the VM and run its start script."""
    if not a.ip:
        die("--role needs --ip")
    params = {
        "NAME": a.name, "NBMA_IP": a.ip.split("/")[0], "NBMA_DEV": "eth0",
        "TUNNEL_IP": a.tunnel_ip, "HUB_NBMA": a.hub_nbma, "HUB_TUNNEL_IP": a.hub_tunnel_ip,
        "GRE_KEY": a.gre_key, "NETWORK_ID": a.network_id, "NHRP_KEY": a.nhrp_key, "PSK": a.psk,
        "HOLDTIME": a.holdtime, "TUNNEL_NET": a.tunnel_net, "MTU": a.mtu, "DPD_DELAY": a.dpd_delay,
    }
    if a.role == "spoke" and not a.hub_nbma:
        die("--role spoke needs --hub-nbma")
    agent = Agent(a.name)
    t0 = time.monotonic()
    role_dir = os.path.join(CONF, a.role)
    files = {
        "swanctl.conf": ("/etc/swanctl/conf.d/dmvpn.conf", 0o600),
        "frr.conf": ("/etc/frr/frr.conf", 0o640),
        "start.sh": ("/etc/ix/start.sh", 0o755),
    }
    common = {
        "strongswan-ix.conf": ("/etc/strongswan.d/ix.conf", 0o644),
        "gre-setup.sh": ("/etc/ix/gre-setup.sh", 0o755),
        "start-daemons.sh": ("/etc/ix/start-daemons.sh", 0o755),
    }
    for base, table in ((role_dir, files), (os.path.join(CONF, "common"), common)):
        for src, (dst, mode) in table.items():
            agent.put(dst, render(os.path.join(base, src), params), mode)
    meta_path = os.path.join(vmdir(a.name), "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta.update(role=a.role, tunnel_ip=a.tunnel_ip)
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    t1 = time.monotonic()
    netns = getattr(a, "guest_netns", None)
    rc, out, err = agent.exec((["ip", "netns", "exec", netns] if netns else []) + ["/etc/ix/start.sh"], timeout=180)
    sys.stderr.write(out.decode(errors="replace") + err.decode(errors="replace"))
    if rc != 0:
        die("%s: role %s start script failed (%d)" % (a.name, a.role, rc))
    print("vm: %s configured as %s in %.1fs (files %.1fs, start.sh %.1fs)"
          % (a.name, a.role, time.monotonic() - t0, t1 - t0, time.monotonic() - t1), file=sys.stderr)


def cmd_configure(a):
    if not qemu_pid(a.name):
        die("%s is not running" % a.name)
    configure(a)


def cmd_exec(a):
    if not qemu_pid(a.name):
        die("%s is not running" % a.name)
    argv = a.argv
    if "--" in argv:  # options given after NAME land in the remainder: parse what precedes "--"
        i = argv.index("--")
        opts = argparse.ArgumentParser(prog="vm.sh exec NAME")
        opts.add_argument("--timeout", type=int, default=a.timeout)
        opts.add_argument("--stdin", action="store_true", default=a.stdin)
        o = opts.parse_args(argv[:i])
        a.timeout, a.stdin, argv = o.timeout, o.stdin, argv[i + 1:]
    if not argv:
        die("exec: no command")
    stdin = sys.stdin.buffer.read() if a.stdin else b""
    rc, out, err = Agent(a.name).exec(argv, timeout=a.timeout, stdin=stdin)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.buffer.write(err)
    sys.exit(rc)


def cmd_put(a):
    with open(a.local, "rb") as f:
        Agent(a.name).put(a.remote, f.read(), int(a.mode, 8))


def cmd_get(a):
    rc, out, err = Agent(a.name).exec(["cat", a.remote], timeout=60)
    if rc != 0:
        die(err.decode(errors="replace").strip())
    with open(a.local, "wb") as f:
        f.write(out)


def cmd_down(a):
    for name in a.names:
        down(name)


def down(name):
    d = vmdir(name)
    pid = qemu_pid(name)
    if pid:
        os.kill(pid, signal.SIGCONT)  # a paused qemu would not act on SIGTERM
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not qemu_pid(name):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    try:
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
        subprocess.run(["ip", "netns", "exec", meta["netns"], "ip", "link", "del", meta["tap"]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, ValueError, KeyError):
        pass
    if os.environ.get("IX_KEEP_LOGS"):
        os.makedirs(os.environ["IX_KEEP_LOGS"], exist_ok=True)
        subprocess.run(["cp", os.path.join(d, "console.log"),
                        os.path.join(os.environ["IX_KEEP_LOGS"], name + "-console.log")],
                       stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", d])
    if pid:
        print("vm: %s down (pid %d)" % (name, pid), file=sys.stderr)


def cmd_pause(a):
    """Freeze/thaw a VM (SIGSTOP/SIGCONT to its qemu): the peer goes silent without a clean shutdown."""
    pid = qemu_pid(a.name)
    if not pid:
        die("%s is not running" % a.name)
    os.kill(pid, signal.SIGSTOP if a.cmd == "pause" else signal.SIGCONT)


def cmd_list(a):
    if not os.path.isdir(VMS):
        return
    for name in sorted(os.listdir(VMS)):
        pid = qemu_pid(name)
        try:
            with open(os.path.join(vmdir(name), "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = {}
        print("%-12s %-8s pid=%-7s netns=%s ip=%s role=%s" % (name, "running" if pid else "stopped", pid or "-",
                                                               meta.get("netns"), meta.get("ip"), meta.get("role")))


def cmd_console(a):
    sys.stdout.write(tail(os.path.join(vmdir(a.name), "console.log"), a.lines))


def main():
    p = argparse.ArgumentParser(prog="vm.sh", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("image", help="build or reuse the cached base image; print its directory").set_defaults(f=cmd_image)

    def role_args(q):
        q.add_argument("--role", choices=["hub", "spoke"], help="configure strongSwan + FRR for this role")
        q.add_argument("--tunnel-ip", default="10.250.0.1", help="tunnel address (a /32 on gre1)")
        q.add_argument("--tunnel-net", default="10.250.0.0/24")
        q.add_argument("--hub-nbma", default="", help="spoke: the hub's NBMA address")
        q.add_argument("--hub-tunnel-ip", default="10.250.0.1")
        q.add_argument("--psk", default=os.environ.get("IX_PSK", "dmvpn-interop-psk"))
        q.add_argument("--nhrp-key", default=os.environ.get("IX_NHRP_KEY", "keykey00"))
        q.add_argument("--gre-key", default="100")
        q.add_argument("--network-id", default="100")
        q.add_argument("--holdtime", default=os.environ.get("IX_HOLDTIME", "600"))
        q.add_argument("--mtu", default="1400")
        q.add_argument("--dpd-delay", default="40s")

    q = sub.add_parser("up", help="boot a VM with its eth0 on a bridge in a netns (optionally configure a role)")
    q.add_argument("name")
    q.add_argument("--netns", default="dmvpn-ix-wan")
    q.add_argument("--bridge", default="br-wan")
    q.add_argument("--tap", help="tap name in the netns (default ixt-NAME)")
    q.add_argument("--ip", help="eth0 address with prefix, e.g. 198.51.100.1/24")
    q.add_argument("--gw", help="default gateway for eth0")
    q.add_argument("--mac")
    q.add_argument("--mem", type=int, default=int(os.environ.get("IX_MEM", "512")))
    q.add_argument("--boot-timeout", type=int, default=int(os.environ.get("IX_BOOT_TIMEOUT", "240")))
    q.add_argument("--image-script", help="image builder to use (default build-image.sh; systemd/build-image.sh)")
    q.add_argument("--init", default="/sbin/ix-init", help="PID 1 (e.g. /usr/lib/systemd/systemd)")
    role_args(q)
    q.set_defaults(f=cmd_up)

    q = sub.add_parser("configure", help="(re)configure a running VM for a role")
    q.add_argument("name")
    q.add_argument("--ip", required=True, help="the VM's eth0 address with prefix")
    q.add_argument("--guest-netns", help="run the role's daemons in this network namespace of the VM "
                   "(its NBMA interface must be called eth0 there)")
    role_args(q)
    q.set_defaults(f=cmd_configure)

    q = sub.add_parser("exec", help="run a command in the VM; prints its output, exits with its status")
    q.add_argument("name")
    q.add_argument("--timeout", type=int, default=120)
    q.add_argument("--stdin", action="store_true", help="forward this process's stdin to the command")
    q.add_argument("argv", nargs=argparse.REMAINDER)
    q.set_defaults(f=cmd_exec)

    q = sub.add_parser("put", help="copy a host file into the VM")
    q.add_argument("name"); q.add_argument("local"); q.add_argument("remote")
    q.add_argument("--mode", default="644")
    q.set_defaults(f=cmd_put)

    q = sub.add_parser("get", help="copy a file out of the VM")
    q.add_argument("name"); q.add_argument("remote"); q.add_argument("local")
    q.set_defaults(f=cmd_get)

    q = sub.add_parser("down", help="stop VMs (kill their qemu by pid), remove tap and overlay")
    q.add_argument("names", nargs="+")
    q.set_defaults(f=cmd_down)

    sub.add_parser("list", help="list VMs").set_defaults(f=cmd_list)

    for c, h in (("pause", "freeze a VM (SIGSTOP to qemu), e.g. a dead hub for DPD"), ("resume", "thaw it")):
        q = sub.add_parser(c, help=h)
        q.add_argument("name")
        q.set_defaults(f=cmd_pause)

    q = sub.add_parser("console", help="print the tail of a VM's serial console log")
    q.add_argument("name"); q.add_argument("-n", "--lines", type=int, default=60)
    q.set_defaults(f=cmd_console)

    a = p.parse_args()
    a.f(a)


if __name__ == "__main__":
    main()
