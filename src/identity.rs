//! A pod's identity: the StatefulSet name and the ordinal, parsed from its
//! hostname (`kvstore-2` -> set `kvstore`, ordinal 2).

use std::fmt;

/// Why a node name is not a StatefulSet pod name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// No name was given and HOSTNAME is unset.
    #[error("no node name: pass --node-name or set HOSTNAME (a StatefulSet pod's hostname is <set>-<ordinal>)")]
    Missing,
    /// The name does not end in `-<ordinal>`.
    #[error(
        "node name {0:?} has no ordinal: expected <statefulset>-<ordinal>, for example kvstore-0"
    )]
    NoOrdinal(String),
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodName {
    /// The StatefulSet name, e.g. `kvstore`.
    pub set: String,
    /// The ordinal: the node's id and its election priority (lower leads).
    pub ordinal: u32,
}

impl PodName {
    /// Parses `<set>-<ordinal>`; the set name may itself contain dashes.
    /// A fully qualified hostname is cut at its first dot.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(NameError::Missing);
        }
        let host = name.split('.').next().unwrap_or(name);
        let (set, ordinal) = host
            .rsplit_once('-')
            .ok_or_else(|| NameError::NoOrdinal(name.to_string()))?;
        let valid_digits = !ordinal.is_empty()
            && ordinal.bytes().all(|b| b.is_ascii_digit())
            && (ordinal == "0" || !ordinal.starts_with('0'));
        if set.is_empty() || !valid_digits {
            return Err(NameError::NoOrdinal(name.to_string()));
        }
        let ordinal = ordinal
            .parse()
            .map_err(|_| NameError::NoOrdinal(name.to_string()))?;
        Ok(PodName {
            set: set.to_string(),
            ordinal,
        })
    }

    /// The name of the member with `ordinal` in the same set.
    pub fn sibling(&self, ordinal: u32) -> PodName {
        PodName {
            set: self.set.clone(),
            ordinal,
        }
    }
}

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.set, self.ordinal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// StatefulSet names parse, including sets with dashes and FQDNs.
    #[test]
    fn parses_pod_names() {
        assert_eq!(
            PodName::parse("kvstore-2"),
            Ok(PodName {
                set: "kvstore".into(),
                ordinal: 2
            })
        );
        let n =
            PodName::parse("my-kv-10.kvstore-headless.default.svc.cluster.local").expect("fqdn");
        assert_eq!((n.set.as_str(), n.ordinal), ("my-kv", 10));
        assert_eq!(n.to_string(), "my-kv-10");
    }

    /// Names without an ordinal are refused with a message saying why.
    #[test]
    fn refuses_names_without_ordinal() {
        for bad in [
            "kvstore",
            "kvstore-",
            "-3",
            "kvstore-a",
            "kvstore-01",
            "kvstore-1x",
        ] {
            let err = PodName::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("no ordinal"), "{bad}: {err}");
        }
        assert_eq!(PodName::parse(""), Err(NameError::Missing));
    }
}
