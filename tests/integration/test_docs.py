"""The settings reference in docs/configuration.md matches what the binary declares."""
import os
import re
import subprocess


def test_settings_reference_matches_binary(tmp_path):
    builddir = os.environ.get("top_builddir", ".")
    srcdir = os.environ.get("top_srcdir", ".")
    conf = tmp_path / "k.conf"
    conf.write_text(
        'core = { modules_dir = "%s/modules/.libs"; };\n'
        'modules = [ "c2s", "sm", "net", "s2s", "example" ];\n' % builddir)
    out = subprocess.run([os.path.join(builddir, "kontalkd"), "--settings", "-c", str(conf)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    # The packaged modules directory depends on --prefix/--libdir.
    generated = re.sub(r'"[^"]*/kontalkd/modules"', '"$(libdir)/kontalkd/modules"', out.stdout)
    for group in ("core", "tls", "database", "c2s", "sm", "net", "s2s", "example"):
        assert "### %s\n" % group in generated
    with open(os.path.join(srcdir, "docs", "configuration.md")) as f:
        doc = f.read()
    assert generated in doc, "docs/configuration.md is stale: regenerate it with kontalkd --settings"
