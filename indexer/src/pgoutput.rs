//! A decoder for pgoutput protocol version 1 row messages: Relation, Type,
//! Insert, Update, Delete, Truncate and Origin. (`pgwire-replication`
//! already decodes Begin, Commit and logical Messages.)
//!
//! Values arrive in Postgres' text format; an unchanged TOAST value arrives
//! as a marker, never as its value.

use std::collections::HashMap;

use schema::pgtext::TextRow;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message truncated")]
    Truncated,
    #[error("unknown pgoutput message tag {0:?}")]
    UnknownTag(char),
    #[error("unknown tuple column kind {0:?}")]
    UnknownKind(char),
    #[error("a change for relation {0} came before its Relation message")]
    UnknownRelation(u32),
    #[error("a binary column value; the stream must use the text format")]
    Binary,
}

type R<T> = Result<T, DecodeError>;

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change: not sent.
    UnchangedToast,
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    pub namespace: String,
    pub name: String,
    pub columns: Vec<String>,
}

/// A tuple with its relation's column names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    pub values: HashMap<String, Value>,
}

impl Tuple {
    pub fn has_unchanged_toast(&self) -> bool {
        self.values.values().any(|v| *v == Value::UnchangedToast)
    }
}

impl TextRow for Tuple {
    fn get(&self, column: &str) -> Option<&str> {
        match self.values.get(column) {
            Some(Value::Text(s)) => Some(s),
            Some(Value::Null | Value::UnchangedToast) | None => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    /// Type, Origin: nothing to do.
    Ignored,
    Insert {
        relation: u32,
        new: Tuple,
    },
    Update {
        relation: u32,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: Tuple,
    },
    Truncate {
        relations: Vec<u32>,
    },
}

/// Keeps the Relation messages so row messages can name their columns.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| DecodeError::Truncated)?,
        ))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| DecodeError::Truncated)?,
        ))
    }
    fn cstr(&mut self) -> R<String> {
        let end = self
            .0
            .iter()
            .position(|b| *b == 0)
            .ok_or(DecodeError::Truncated)?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
}

impl Decoder {
    pub fn relation(&self, id: u32) -> Option<&Relation> {
        self.relations.get(&id)
    }

    /// Decodes one message, remembering Relation messages.
    pub fn decode(&mut self, data: &[u8]) -> R<Message> {
        let mut c = Cursor(data);
        let tag = c.u8()?;
        match tag {
            b'R' => {
                let id = c.u32()?;
                let namespace = c.cstr()?;
                let name = c.cstr()?;
                let _replica_identity = c.u8()?;
                let n = c.i16()?.max(0) as usize;
                let mut columns = Vec::with_capacity(n);
                for _ in 0..n {
                    let _flags = c.u8()?;
                    columns.push(c.cstr()?);
                    let _type_oid = c.u32()?;
                    let _typmod = c.u32()?;
                }
                let rel = Relation {
                    id,
                    namespace,
                    name,
                    columns,
                };
                self.relations.insert(id, rel.clone());
                Ok(Message::Relation(rel))
            }
            b'Y' | b'O' => Ok(Message::Ignored),
            b'I' => {
                let relation = c.u32()?;
                let _n = c.u8()?; // 'N'
                let new = self.tuple(relation, &mut c)?;
                Ok(Message::Insert { relation, new })
            }
            b'U' => {
                let relation = c.u32()?;
                let mut kind = c.u8()?;
                if kind == b'K' || kind == b'O' {
                    let _old = self.tuple(relation, &mut c)?;
                    kind = c.u8()?;
                }
                debug_assert_eq!(kind, b'N');
                let new = self.tuple(relation, &mut c)?;
                Ok(Message::Update { relation, new })
            }
            b'D' => {
                let relation = c.u32()?;
                let _kind = c.u8()?; // 'K' or 'O'
                let old = self.tuple(relation, &mut c)?;
                Ok(Message::Delete { relation, old })
            }
            b'T' => {
                let n = c.u32()? as usize;
                let _options = c.u8()?;
                let relations = (0..n).map(|_| c.u32()).collect::<R<Vec<_>>>()?;
                Ok(Message::Truncate { relations })
            }
            other => Err(DecodeError::UnknownTag(other as char)),
        }
    }

    fn tuple(&self, relation: u32, c: &mut Cursor<'_>) -> R<Tuple> {
        let rel = self
            .relations
            .get(&relation)
            .ok_or(DecodeError::UnknownRelation(relation))?;
        let n = c.i16()?.max(0) as usize;
        let mut values = HashMap::with_capacity(n);
        for i in 0..n {
            let value = match c.u8()? {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b't' => {
                    let len = c.u32()? as usize;
                    Value::Text(String::from_utf8_lossy(c.take(len)?).into_owned())
                }
                b'b' => return Err(DecodeError::Binary),
                other => return Err(DecodeError::UnknownKind(other as char)),
            };
            if let Some(name) = rel.columns.get(i) {
                values.insert(name.clone(), value);
            }
        }
        Ok(Tuple { values })
    }
}

/// pgoutput messages for tests, built the way Postgres writes them.
#[cfg(test)]
pub(crate) mod testing {
    /// A Relation message for `public.contacts` (oid 16384) with `columns`
    /// (the first one the key).
    pub fn relation_msg(columns: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"public\0contacts\0");
        m.push(b'd');
        m.extend((columns.len() as i16).to_be_bytes());
        for (i, name) in columns.iter().enumerate() {
            m.push(u8::from(i == 0));
            m.extend(name.as_bytes());
            m.push(0);
            m.extend(25u32.to_be_bytes());
            m.extend(u32::MAX.to_be_bytes());
        }
        m
    }

    /// A text value of a tuple.
    pub fn text(m: &mut Vec<u8>, s: &str) {
        m.push(b't');
        m.extend((s.len() as u32).to_be_bytes());
        m.extend(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{relation_msg, text};
    use super::*;

    #[test]
    fn decodes_relation_insert_update_with_toast_delete_truncate() {
        let mut d = Decoder::default();
        let Message::Relation(rel) = d.decode(&relation_msg(&["id", "notes"])).unwrap() else {
            panic!()
        };
        assert_eq!((rel.name.as_str(), rel.columns.len()), ("contacts", 2));

        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(2i16.to_be_bytes());
        text(&mut ins, "abc");
        text(&mut ins, "hello");
        let Message::Insert { new, .. } = d.decode(&ins).unwrap() else {
            panic!()
        };
        assert_eq!(new.get("notes"), Some("hello"));

        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'N');
        upd.extend(2i16.to_be_bytes());
        text(&mut upd, "abc");
        upd.push(b'u');
        let Message::Update { new, .. } = d.decode(&upd).unwrap() else {
            panic!()
        };
        assert!(new.has_unchanged_toast());
        assert_eq!(new.get("notes"), None);

        let mut del = vec![b'D'];
        del.extend(16384u32.to_be_bytes());
        del.push(b'K');
        del.extend(2i16.to_be_bytes());
        text(&mut del, "abc");
        del.push(b'n');
        let Message::Delete { old, .. } = d.decode(&del).unwrap() else {
            panic!()
        };
        assert_eq!(old.get("id"), Some("abc"));

        let mut tr = vec![b'T'];
        tr.extend(1u32.to_be_bytes());
        tr.push(0);
        tr.extend(16384u32.to_be_bytes());
        assert_eq!(
            d.decode(&tr).unwrap(),
            Message::Truncate {
                relations: vec![16384]
            }
        );

        assert_eq!(d.decode(&ins[..5]), Err(DecodeError::Truncated));
        let mut unknown = ins.clone();
        unknown[1..5].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(d.decode(&unknown), Err(DecodeError::UnknownRelation(1)));
    }
}
