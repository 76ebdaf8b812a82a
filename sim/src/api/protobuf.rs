//! The one protobuf body the simulated server reads: a TokenRequest, which `kubectl create token`
//! sends only as protobuf (its typed client does not fall back to JSON). Every other protobuf
//! body gets `415 Unsupported Media Type`.
//!
//! The wire format is Kubernetes' envelope: the magic `k8s\0`, then a `runtime.Unknown`
//! (`typeMeta` = 1 with `apiVersion` = 1 and `kind` = 2, `raw` = 2), whose `raw` holds the
//! object: `authentication.k8s.io/v1.TokenRequest` (`metadata` = 1, `spec` = 2), its spec
//! (`audiences` = 1, `boundObjectRef` = 3, `expirationSeconds` = 4) and the reference (`kind` = 1,
//! `apiVersion` = 2, `name` = 3, `uid` = 4), as in upstream's `generated.proto`.

use serde_json::{Value, json};

const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: its number and its value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of a message, in order; an error for a malformed one.
fn fields(mut bytes: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(&mut bytes)?),
            2 => {
                let length = usize::try_from(varint(&mut bytes)?).map_err(|e| e.to_string())?;
                if length > bytes.len() {
                    return Err("a length past the end of the message".into());
                }
                let (value, rest) = bytes.split_at(length);
                bytes = rest;
                Field::Bytes(value)
            }
            other => return Err(format!("wire type {other} is not used by this message")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn varint(bytes: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or("a varint past the end of the message")?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint longer than 64 bits".into())
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
}

/// The TokenRequest in a protobuf body, as its JSON form.
pub fn token_request(body: &[u8]) -> Result<Value, String> {
    let envelope = body.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body (no k8s\\0 prefix)")?;
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (number, field) in fields(type_meta)? {
                    if let (2, Field::Bytes(value)) = (number, field) {
                        kind = text(value)?;
                    }
                }
            }
            (2, Field::Bytes(value)) => raw = value,
            _ => {}
        }
    }
    if kind != "TokenRequest" {
        return Err(format!("a protobuf {kind:?} is not read here; send JSON"));
    }
    let mut spec = json!({});
    for (number, field) in fields(raw)? {
        let (2, Field::Bytes(spec_bytes)) = (number, field) else { continue };
        for (number, field) in fields(spec_bytes)? {
            match (number, field) {
                (1, Field::Bytes(audience)) => {
                    let audiences = spec["audiences"].as_array().cloned().unwrap_or_default();
                    let mut audiences = audiences;
                    audiences.push(json!(text(audience)?));
                    spec["audiences"] = json!(audiences);
                }
                (4, Field::Varint(seconds)) => spec["expirationSeconds"] = json!(seconds as i64),
                (3, Field::Bytes(reference)) => {
                    let mut bound = json!({});
                    for (number, field) in fields(reference)? {
                        let key = match number {
                            1 => "kind",
                            2 => "apiVersion",
                            3 => "name",
                            4 => "uid",
                            _ => continue,
                        };
                        if let Field::Bytes(value) = field {
                            bound[key] = json!(text(value)?);
                        }
                    }
                    spec["boundObjectRef"] = bound;
                }
                _ => {}
            }
        }
    }
    Ok(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn a_token_request_reads_as_its_json_and_other_bodies_are_refused() {
        let mut reference = field(1, b"Pod");
        reference.extend(field(3, b"web-0"));
        let mut spec = field(1, b"api");
        spec.extend(field(3, &reference));
        spec.extend([4 << 3, 0xd8, 0x04]); // expirationSeconds = 600
        let raw = field(2, &spec);
        let mut type_meta = field(1, b"authentication.k8s.io/v1");
        type_meta.extend(field(2, b"TokenRequest"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, &raw));
        let request = token_request(&body).expect("decodes");
        assert_eq!(
            request["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 600, "boundObjectRef": {"kind": "Pod", "name": "web-0"}})
        );

        assert!(token_request(b"{}").is_err(), "JSON is not protobuf");
        let mut pod = MAGIC.to_vec();
        pod.extend(field(1, &field(2, b"Pod")));
        assert!(token_request(&pod).expect_err("a pod").contains("send JSON"));
        let mut truncated = body.clone();
        truncated.truncate(body.len() - 3);
        assert!(token_request(&truncated).is_err(), "a cut message is an error, not a panic");
    }
}
