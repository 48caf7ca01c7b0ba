//! The subject of a client certificate as an RFC 4514 string (`CN=client,O=Example`), for the
//! OPEN record. A small DER reader over the one path we need (Certificate → TBSCertificate →
//! subject); the certificate has already been verified by rustls, but the reader still checks
//! every length and returns `None` rather than panic on anything unexpected.

/// A DER element: tag and contents.
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads one element from the front of `input`, returning it and the rest.
fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            body: &rest[..len],
        },
        &rest[len..],
    ))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The subject of a DER certificate, RFC 4514 (most specific RDN first).
pub fn subject(cert_der: &[u8]) -> Option<String> {
    let (cert, _) = next(cert_der)?;
    if cert.tag != SEQUENCE {
        return None;
    }
    let (tbs, _) = next(cert.body)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs.body;
    let (first, after) = next(rest)?;
    if first.tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = next(rest)?.1;
    }
    let (name, _) = next(rest)?;
    if name.tag != SEQUENCE {
        return None;
    }
    let mut rdns = Vec::new();
    let mut items = name.body;
    while !items.is_empty() {
        let (rdn, more) = next(items)?;
        items = more;
        if rdn.tag != SET {
            return None;
        }
        let mut parts = Vec::new();
        let mut attrs = rdn.body;
        while !attrs.is_empty() {
            let (attr, more) = next(attrs)?;
            attrs = more;
            let (oid, value_rest) = next(attr.body)?;
            let (value, _) = next(value_rest)?;
            if oid.tag != OID {
                return None;
            }
            parts.push(format!(
                "{}={}",
                attribute_name(oid.body),
                attribute_value(&value)
            ));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn attribute_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x09] => "STREET".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
        _ => dotted_oid(oid),
    }
}

fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for (i, &b) in oid.iter().enumerate() {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        } else if i + 1 == oid.len() || value > u64::MAX >> 7 {
            return "0.0".into();
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A string value, escaped per RFC 4514; other types as `#` and hex of the DER.
fn attribute_value(value: &Tlv<'_>) -> String {
    const UTF8: u8 = 0x0c;
    const PRINTABLE: u8 = 0x13;
    const IA5: u8 = 0x16;
    const T61: u8 = 0x14;
    let text = match value.tag {
        UTF8 | PRINTABLE | IA5 | T61 => std::str::from_utf8(value.body).ok(),
        _ => None,
    };
    let Some(text) = text else {
        let mut hex = String::from("#");
        hex.push_str(&format!("{:02x}", value.tag));
        hex.push_str(&format!("{:02x}", value.body.len().min(255)));
        for b in value.body {
            hex.push_str(&format!("{b:02x}"));
        }
        return hex;
    };
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_subject_of_a_generated_certificate() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc.");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device 7");
        let cert = params.self_signed(&key).unwrap();
        let subject = subject(cert.der()).unwrap();
        assert!(subject.contains("CN=device 7"), "{subject}");
        assert!(subject.contains("O=Example\\, Inc."), "{subject}");
    }

    #[test]
    fn garbage_gives_none_not_a_panic() {
        assert_eq!(subject(b""), None);
        assert_eq!(subject(&[0x30, 0x82, 0xff, 0xff]), None);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject(&der[..cut]);
        }
        assert_eq!(
            dotted_oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }
}
