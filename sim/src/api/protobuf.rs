//! The protobuf bodies the simulated server reads: the TokenRequest of `kubectl create token` and
//! the Namespace of `kubectl create namespace`, which recent kubectl sends only as protobuf (its
//! typed clients do not fall back to JSON). Every other protobuf body gets
//! `415 Unsupported Media Type`.
//!
//! The wire format is Kubernetes' envelope: the magic `k8s\0`, then a `runtime.Unknown`
//! (`typeMeta` = 1 with `apiVersion` = 1 and `kind` = 2, `raw` = 2), whose `raw` holds the
//! object, with the field numbers of upstream's `generated.proto`: a TokenRequest (`spec` = 2:
//! `audiences` = 1, `boundObjectRef` = 3 with `kind` = 1, `apiVersion` = 2, `name` = 3, `uid` = 4,
//! `expirationSeconds` = 4), a Namespace (`metadata` = 1, `spec` = 2 with `finalizers` = 1), and
//! ObjectMeta (`name` = 1, `generateName` = 2, `namespace` = 3, `labels` = 11, `annotations` = 12,
//! map entries `key` = 1, `value` = 2).

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

/// The object in a protobuf body, as its JSON form: a TokenRequest or a Namespace.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let envelope = body.strip_prefix(MAGIC).ok_or("not a Kubernetes protobuf body (no k8s\\0 prefix)")?;
    let (mut api_version, mut kind) = (String::new(), String::new());
    let mut raw: &[u8] = &[];
    for (number, field) in fields(envelope)? {
        match (number, field) {
            (1, Field::Bytes(type_meta)) => {
                for (number, field) in fields(type_meta)? {
                    match (number, field) {
                        (1, Field::Bytes(value)) => api_version = text(value)?,
                        (2, Field::Bytes(value)) => kind = text(value)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(value)) => raw = value,
            _ => {}
        }
    }
    let mut object = match kind.as_str() {
        "TokenRequest" => token_request(raw)?,
        "Namespace" => namespace(raw)?,
        other => return Err(format!("a protobuf {other:?} is not read here; send JSON")),
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

fn token_request(raw: &[u8]) -> Result<Value, String> {
    let mut spec = json!({});
    for (number, field) in fields(raw)? {
        let (2, Field::Bytes(spec_bytes)) = (number, field) else { continue };
        for (number, field) in fields(spec_bytes)? {
            match (number, field) {
                (1, Field::Bytes(audience)) => {
                    let mut audiences = spec["audiences"].as_array().cloned().unwrap_or_default();
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
    Ok(json!({"spec": spec}))
}

fn namespace(raw: &[u8]) -> Result<Value, String> {
    let mut object = json!({"metadata": {}});
    for (number, field) in fields(raw)? {
        match (number, field) {
            (1, Field::Bytes(meta)) => object["metadata"] = object_meta(meta)?,
            (2, Field::Bytes(spec)) => {
                let mut finalizers = Vec::new();
                for (number, field) in fields(spec)? {
                    if let (1, Field::Bytes(value)) = (number, field) {
                        finalizers.push(json!(text(value)?));
                    }
                }
                if !finalizers.is_empty() {
                    object["spec"] = json!({"finalizers": finalizers});
                }
            }
            _ => {}
        }
    }
    Ok(object)
}

fn object_meta(bytes: &[u8]) -> Result<Value, String> {
    let mut meta = json!({});
    for (number, field) in fields(bytes)? {
        let Field::Bytes(value) = field else { continue };
        match number {
            1 => meta["name"] = json!(text(value)?),
            2 => meta["generateName"] = json!(text(value)?),
            3 => meta["namespace"] = json!(text(value)?),
            11 | 12 => {
                let (mut key, mut entry) = (String::new(), String::new());
                for (number, field) in fields(value)? {
                    match (number, field) {
                        (1, Field::Bytes(k)) => key = text(k)?,
                        (2, Field::Bytes(v)) => entry = text(v)?,
                        _ => {}
                    }
                }
                meta[if number == 11 { "labels" } else { "annotations" }][key] = json!(entry);
            }
            _ => {}
        }
    }
    Ok(meta)
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
    fn token_requests_and_namespaces_read_as_their_json_and_other_bodies_are_refused() {
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
        let request = to_json(&body).expect("decodes");
        assert_eq!(
            (request["apiVersion"].as_str(), request["kind"].as_str()),
            (Some("authentication.k8s.io/v1"), Some("TokenRequest"))
        );
        assert_eq!(
            request["spec"],
            json!({"audiences": ["api"], "expirationSeconds": 600, "boundObjectRef": {"kind": "Pod", "name": "web-0"}})
        );

        assert!(to_json(b"{}").is_err(), "JSON is not protobuf");
        let mut pod = MAGIC.to_vec();
        pod.extend(field(1, &field(2, b"Pod")));
        assert!(to_json(&pod).expect_err("a pod").contains("send JSON"));
        let mut truncated = body.clone();
        truncated.truncate(body.len() - 3);
        assert!(to_json(&truncated).is_err(), "a cut message is an error, not a panic");

        // `kubectl create namespace team --dry-run` with a label, as kubectl 1.33 encodes it.
        let mut label = field(1, b"team");
        label.extend(field(2, b"a"));
        let mut meta = field(1, b"team");
        meta.extend(field(11, &label));
        let mut type_meta = field(1, b"v1");
        type_meta.extend(field(2, b"Namespace"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, &field(1, &meta)));
        assert_eq!(
            to_json(&body).expect("a namespace"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"team": "a"}}})
        );
    }
}
