"""make install: the binary, man pages, example configuration, systemd unit and the NGINX
converter land under DESTDIR/PREFIX, and what landed works."""
import os
import subprocess

import helpers
from helpers import REPO, SLUICE_BIN


def test_make_install_puts_every_file_in_place(tmp_path):
    dest = tmp_path / "root"
    build = os.path.relpath(os.path.dirname(SLUICE_BIN), REPO)
    p = subprocess.run(["make", "-s", "-C", REPO, "install", "DESTDIR=%s" % dest,
                        "PREFIX=/opt/sluice", "BUILD=%s" % build],
                       capture_output=True, text=True, timeout=600 * helpers.SLOW)
    assert p.returncode == 0, p.stdout + p.stderr
    want = {"opt/sluice/sbin/sluice": 0o755, "opt/sluice/share/man/man8/sluice.8": 0o644,
            "opt/sluice/share/man/man5/sluice.ini.5": 0o644, "etc/sluice/sluice.ini.example": 0o644,
            "opt/sluice/lib/systemd/system/sluice.service": 0o644,
            "opt/sluice/share/sluice/nginx2sluice.py": 0o755,
            "opt/sluice/share/doc/sluice/migrating-from-nginx.md": 0o644}
    for rel, mode in want.items():
        st = os.stat(dest / rel)
        assert st.st_mode & 0o777 == mode, (rel, oct(st.st_mode))
    unit = (dest / "opt/sluice/lib/systemd/system/sluice.service").read_text()
    assert "ExecStart=/opt/sluice/sbin/sluice" in unit, unit
    # the installed binary runs, and the example configuration passes its check
    binary = str(dest / "opt/sluice/sbin/sluice")
    v = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30,
                       env=helpers.sluice_env())
    assert v.returncode == 0 and v.stdout.startswith("sluice "), v
    t = subprocess.run([binary, "-t", "-c", str(dest / "etc/sluice/sluice.ini.example")],
                       capture_output=True, text=True, timeout=30, env=helpers.sluice_env())
    assert t.returncode == 0 and "syntax is ok" in t.stdout, t
    # the converter it installed is the one in contrib/
    with open(os.path.join(REPO, "contrib", "nginx2sluice.py"), "rb") as f:
        assert (dest / "opt/sluice/share/sluice/nginx2sluice.py").read_bytes() == f.read()
