//! Who this node is, kept in the store's `meta` table.

use ferry_bundle::DatasetKey;
use ferry_model::crypto::{PublicKey, SecretKey};
use ferry_model::{DatasetId, MemberId};
use serde::{Deserialize, Serialize};

/// This node's identity and the dataset's secrets.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The dataset.
    pub dataset: DatasetId,
    /// Its name.
    pub dataset_name: String,
    /// Its shared key.
    pub dataset_key: DatasetKey,
    /// The admin's key.
    pub admin_key: PublicKey,
    /// This node's member number.
    pub me: MemberId,
    /// This node's label.
    pub label: String,
    /// This node's device key.
    pub secret: SecretKey,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    dataset: DatasetId,
    dataset_name: String,
    dataset_key: [u8; 32],
    admin_key: PublicKey,
    me: MemberId,
    label: String,
    secret: [u8; 32],
}

impl Identity {
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        postcard::to_allocvec(&Stored {
            dataset: self.dataset,
            dataset_name: self.dataset_name.clone(),
            dataset_key: self.dataset_key.0,
            admin_key: self.admin_key,
            me: self.me,
            label: self.label.clone(),
            secret: self.secret.to_bytes(),
        })
        .expect("identity encodes")
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<Identity, postcard::Error> {
        let s: Stored = postcard::from_bytes(b)?;
        Ok(Identity {
            dataset: s.dataset,
            dataset_name: s.dataset_name,
            dataset_key: DatasetKey(s.dataset_key),
            admin_key: s.admin_key,
            me: s.me,
            label: s.label,
            secret: SecretKey::from_bytes(s.secret),
        })
    }

    /// Whether this node is the dataset's admin.
    pub fn is_founder(&self) -> bool {
        self.me == MemberId::ADMIN
    }
}
