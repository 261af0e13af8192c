"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Built once from the pinned upstream Go modules (the same sources controller-runtime's envtest
ships as binaries) into ``~/.cache/streamotion/k8s/<version>/bin``, with a matching kubectl.
No kubelet or scheduler runs: objects are stored, validated, defaulted, admitted and
garbage-collected exactly as in a cluster, and the Deployment/ReplicaSet controllers work.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from streamotion.dev.procs import Process, free_port

K8S_VERSION = "1.35.4"
GO_SOURCES = Path(__file__).with_name("k8s")  # go.mod/go.sum pinning Kubernetes and etcd
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def bin_dir(version: str = K8S_VERSION) -> Path:
    return cache_dir() / "k8s" / f"v{version}" / "bin"


def ensure_binaries(log=print) -> Path:
    """Build etcd, kube-apiserver, kube-controller-manager and kubectl if not cached yet."""
    out = bin_dir()
    if all((out / b).exists() for b in BINARIES):
        return out
    go = shutil.which("go")
    if not go:
        raise RuntimeError("Go is needed once to build the control plane (https://go.dev/dl); none on PATH")
    src = out.parent / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(GO_SOURCES, src)
    tmp = out.parent / "bin.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -trimpath"}
    log(f"Building Kubernetes v{K8S_VERSION} control plane from Go modules (once, several minutes)...")
    steps = [
        [go, "build", "-o", str(tmp / "etcd"), "./cmd/etcd"],
        [
            go,
            "build",
            "-ldflags",
            _version_ldflags(),
            "-o",
            str(tmp) + "/",
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kubectl",
        ],
    ]
    for step in steps:
        log("  $ " + " ".join(Path(step[0]).name if i == 0 else a for i, a in enumerate(step)))
        result = subprocess.run(step, cwd=src, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"building the control plane failed:\n{result.stderr[-4000:]}")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _version_ldflags() -> str:
    major, minor, _ = K8S_VERSION.split(".")
    pkgs = ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
    flags = []
    for pkg in pkgs:
        flags += [
            f"-X {pkg}.gitVersion=v{K8S_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return "-s -w " + " ".join(flags)


# ---------------------------------------------------------------------------------- certificates
def _write_pki(d: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    later = now + dt.timedelta(days=365)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def save_key(k, name):
        (d / name).write_bytes(
            k.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def name(cn, org=None):
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("streamotion-dev-ca"))
        .issuer_name(name("streamotion-dev-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(later)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn, org, usage, sans=None):
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn, org))
            .issuer_name(ca.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(later)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    from cryptography.x509.oid import ExtendedKeyUsageOID as EKU

    srv_key, srv = leaf(
        "kube-apiserver",
        None,
        EKU.SERVER_AUTH,
        [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
        ],
    )
    adm_key, adm = leaf("streamotion-admin", "system:masters", EKU.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    save_key(ca_key, "ca.key")
    (d / "apiserver.crt").write_bytes(srv.public_bytes(pem))
    save_key(srv_key, "apiserver.key")
    (d / "admin.crt").write_bytes(adm.public_bytes(pem))
    save_key(adm_key, "admin.key")
    sa_key = key()
    save_key(sa_key, "sa.key")
    (d / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _kubeconfig(server: str, pki: Path) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "streamotion-dev",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"client-certificate": str(pki / "admin.crt"), "client-key": str(pki / "admin.key")},
            }
        ],
        "contexts": [{"name": "streamotion-dev", "context": {"cluster": "streamotion-dev", "user": "admin"}}],
        "current-context": "streamotion-dev",
    }


# --------------------------------------------------------------------------------- control plane
@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback, with an admin kubeconfig."""

    kubeconfig_path: Path | None = None
    crd_dirs: list[Path] = field(default_factory=list)
    workdir: Path | None = None
    controller_manager: bool = True
    own_crd: bool = True
    """Install the StreamPipeline CRD (``streamotion crd``) at start."""
    log: object = print

    def __post_init__(self) -> None:
        self._procs: list[Process] = []
        self._own_workdir = self.workdir is None
        self.server = ""

    # -- lifecycle
    def start(self, timeout: float = 120) -> ControlPlane:
        bins = ensure_binaries(self.log)
        self.workdir = Path(self.workdir or tempfile.mkdtemp(prefix="streamotion-k8s-"))
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        _write_pki(pki)
        etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.server = f"https://127.0.0.1:{api_port}"
        self.kubeconfig_path = Path(self.kubeconfig_path or self.workdir / "kubeconfig")
        self.kubeconfig_path.parent.mkdir(parents=True, exist_ok=True)
        self.kubeconfig_path.write_text(json.dumps(_kubeconfig(self.server, pki), indent=2))
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        try:
            self._procs.append(
                Process.start(
                    "etcd",
                    [
                        str(bins / "etcd"),
                        "--data-dir",
                        str(self.workdir / "etcd"),
                        "--listen-client-urls",
                        etcd_url,
                        "--advertise-client-urls",
                        etcd_url,
                        "--listen-peer-urls",
                        f"http://127.0.0.1:{peer_port}",
                        "--initial-advertise-peer-urls",
                        f"http://127.0.0.1:{peer_port}",
                        "--initial-cluster",
                        f"default=http://127.0.0.1:{peer_port}",
                        "--unsafe-no-fsync",
                        "--log-level",
                        "warn",
                    ],
                    logs / "etcd.log",
                )
            )
            self._procs.append(
                Process.start(
                    "kube-apiserver",
                    [
                        str(bins / "kube-apiserver"),
                        "--etcd-servers",
                        etcd_url,
                        "--bind-address",
                        "127.0.0.1",
                        "--advertise-address",
                        "127.0.0.1",
                        "--secure-port",
                        str(api_port),
                        "--cert-dir",
                        str(pki),
                        "--tls-cert-file",
                        str(pki / "apiserver.crt"),
                        "--tls-private-key-file",
                        str(pki / "apiserver.key"),
                        "--client-ca-file",
                        str(pki / "ca.crt"),
                        "--service-account-issuer",
                        "https://kubernetes.default.svc.cluster.local",
                        "--service-account-key-file",
                        str(pki / "sa.pub"),
                        "--service-account-signing-key-file",
                        str(pki / "sa.key"),
                        "--service-cluster-ip-range",
                        "10.0.0.0/24",
                        "--authorization-mode",
                        "RBAC",
                        "--allow-privileged=true",
                        "--disable-admission-plugins",
                        "ServiceAccount",
                        "--endpoint-reconciler-type",
                        "none",
                        "--v",
                        "1",
                    ],
                    logs / "kube-apiserver.log",
                )
            )
            self._wait_ready(timeout)
            if self.controller_manager:
                kc = str(self.kubeconfig_path)
                self._procs.append(
                    Process.start(
                        "kube-controller-manager",
                        [
                            str(bins / "kube-controller-manager"),
                            "--kubeconfig",
                            kc,
                            "--authentication-kubeconfig",
                            kc,
                            "--authorization-kubeconfig",
                            kc,
                            "--leader-elect=false",
                            "--bind-address",
                            "127.0.0.1",
                            "--secure-port",
                            str(kcm_port),
                            "--service-account-private-key-file",
                            str(pki / "sa.key"),
                            "--root-ca-file",
                            str(pki / "ca.crt"),
                            "--cluster-signing-cert-file",
                            str(pki / "ca.crt"),
                            "--cluster-signing-key-file",
                            str(pki / "ca.key"),
                            "--use-service-account-credentials=false",
                            "--v",
                            "1",
                        ],
                        logs / "kube-controller-manager.log",
                    )
                )
            self.install_crds(self._crd_files())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        if self._own_workdir and self.workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def check_alive(self) -> None:
        for proc in self._procs:
            proc.check_alive()

    # -- helpers
    def ssl_context(self) -> ssl.SSLContext:
        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self.ssl_context()
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", context=ctx, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last}")

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        cmd = [str(bin_dir() / "kubectl"), "--kubeconfig", str(self.kubeconfig_path), *args]
        result = subprocess.run(cmd, input=input, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def _crd_files(self) -> list[Path]:
        from streamotion.api.crd import crd_yaml

        files = []
        if self.own_crd:
            own = self.workdir / "streampipelines.crd.yaml"
            own.write_text(crd_yaml())
            files.append(own)
        for d in self.crd_dirs:
            d = Path(d)
            files.extend(
                sorted(p for p in d.rglob("*") if p.suffix in (".yaml", ".yml")) if d.is_dir() else [d]
            )
        return files

    def install_crds(self, files: Iterable[Path]) -> None:
        files = list(files)
        if not files:
            return
        args = ["apply", "--server-side", "--force-conflicts"]
        for f in files:
            args += ["-f", str(f)]
        self.kubectl(*args)
        deadline = time.monotonic() + 60
        while True:
            items = json.loads(self.kubectl("get", "crd", "-o", "json").stdout)["items"]
            pending = [
                c["metadata"]["name"]
                for c in items
                if not any(
                    cond["type"] == "Established" and cond["status"] == "True"
                    for cond in c.get("status", {}).get("conditions") or []
                )
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRDs not established after 60s: {pending}")
            time.sleep(0.2)
