"""Create django-pyas2's rows for the side-by-side benchmark: our
Organization (decrypts, signs MDNs) and two Partners sending to it, the
same pair of trading relationships the Atom gets as two process bundles:

  SECURE_ID: signed (sha256) and encrypted (aes256-cbc) required; its
             certificate verifies the signatures;
  PLAIN_ID:  no security required (unsigned, unencrypted messages).

    DJANGO_SETTINGS_MODULE=pyas2_bench.settings PYTHONPATH=benches/peer \\
      python setup_partners.py ORG_ID ORG_KEY_AND_CERT.pem SECURE_ID SECURE_CERT.pem PLAIN_ID

ORG_KEY_AND_CERT.pem holds our unencrypted private key followed by our
certificate (pyas2lib reads PEM key + certificate, or PKCS#12).
"""
import sys

import django

django.setup()

from pyas2.models import Organization, Partner, PrivateKey, PublicCertificate  # noqa: E402

org_id, org_pem, secure_id, secure_cert, plain_id = sys.argv[1:6]
with open(org_pem, "rb") as f:
    key = PrivateKey.objects.create(name=f"{org_id} key", key=f.read(), key_pass="")
with open(secure_cert, "rb") as f:
    # verify_cert (chain validation) stays on: the partner certificate is
    # self-signed, which pyas2lib accepts as its own trust root.
    cert = PublicCertificate.objects.create(name=f"{secure_id} certificate", certificate=f.read())

Organization.objects.create(
    name=org_id, as2_name=org_id, encryption_key=key, signature_key=key
)
# The settings on the Partner rows describe what we require of it on
# receipt (encryption, signature) and how we would send to it; the MDN
# asked for by each message (sync, signed or not) comes from its headers.
target = "http://127.0.0.1:1/unused"  # we never send to the partner
Partner.objects.create(
    name=secure_id,
    as2_name=secure_id,
    target_url=target,
    encryption="aes_256_cbc",
    encryption_cert=cert,
    signature="sha256",
    signature_cert=cert,
    mdn=True,
    mdn_mode="SYNC",
    mdn_sign="sha256",
)
Partner.objects.create(name=plain_id, as2_name=plain_id, target_url=target, mdn=True, mdn_mode="SYNC")

# The same objects the receive view builds for every request must load.
Organization.objects.get(as2_name=org_id).as2org
Partner.objects.get(as2_name=secure_id).as2partner.load_verify_cert()
print(f"django-pyas2: organization {org_id}, partners {secure_id} (signed+encrypted), {plain_id} (plain)")
