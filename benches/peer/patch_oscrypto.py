"""Make oscrypto (a pyas2lib dependency, 1.3.0 and earlier) detect OpenSSL
3.0.1x and later.

oscrypto finds libcrypto's version with the regex \\b(\\d\\.\\d\\.\\d[a-z]*)\\b,
one digit per part, so "OpenSSL 3.0.19" does not match and importing
oscrypto.asymmetric (hence pyas2lib, hence django-pyas2) raises
LibraryNotFoundError("Error detecting the version of libcrypto"). The same
snag is patched for the interop tests' venv by .ci/setup-peers. This
rewrites the regex in the installed files to accept multi-digit parts;
running it again changes nothing.

    python patch_oscrypto.py     # with the venv's python
"""
import os
import sysconfig

OLD = r"'\\b(\\d\\.\\d\\.\\d[a-z]*)\\b'"
NEW = r"'\\b(\\d+\\.\\d+\\.\\d+[a-z]*)\\b'"

base = os.path.join(sysconfig.get_paths()["purelib"], "oscrypto", "_openssl")
found = 0
for name in ("_libcrypto_cffi.py", "_libcrypto_ctypes.py"):
    path = os.path.join(base, name)
    if not os.path.exists(path):
        continue
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if NEW in text:
        found += 1
        continue
    if OLD in text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace(OLD, NEW))
        found += 1
        cache = os.path.join(base, "__pycache__")
        for pyc in os.listdir(cache) if os.path.isdir(cache) else []:
            if pyc.startswith(name[:-3] + "."):
                os.remove(os.path.join(cache, pyc))
if not found:
    raise SystemExit(f"patch_oscrypto: libcrypto version regex not found under {base}")
