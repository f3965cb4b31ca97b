//! Offline membership: invitations the admin issues and the join proofs they produce.

use ferry_model::crypto::{
    InviteCert, JoinProof, PublicKey, SecretKey, invite_message, join_message,
};
use ferry_model::{DatasetId, MemberId};
use serde::{Deserialize, Serialize};

/// Everything a new device needs to join a dataset offline. It holds the dataset key and a
/// one-time invitation key: whoever holds the file can join as this member, so it must be
/// carried like a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The dataset.
    pub dataset: DatasetId,
    /// The dataset's name.
    pub dataset_name: String,
    /// The dataset's shared secret.
    pub dataset_key: [u8; 32],
    /// The admin's public key (the trust anchor).
    pub admin_key: PublicKey,
    /// The admin's label.
    pub admin_label: String,
    /// The admin's signed permission for this member number.
    pub cert: InviteCert,
    /// The one-time invitation secret key.
    pub invite_secret: [u8; 32],
}

impl Invitation {
    /// The admin (labelled `admin_label`) issues an invitation for `member` labelled `label`;
    /// `invite_secret` is 32 fresh random bytes.
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        admin: &SecretKey,
        admin_label: &str,
        dataset: DatasetId,
        dataset_name: &str,
        dataset_key: [u8; 32],
        member: MemberId,
        label: &str,
        invite_secret: [u8; 32],
    ) -> Invitation {
        let invite_key = SecretKey::from_bytes(invite_secret).public();
        let cert = admin.sign(&invite_message(dataset, member, &invite_key, label));
        Invitation {
            dataset,
            dataset_name: dataset_name.to_string(),
            dataset_key,
            admin_key: admin.public(),
            admin_label: admin_label.to_string(),
            cert: InviteCert {
                member,
                label: label.to_string(),
                invite_key,
                cert,
            },
            invite_secret,
        }
    }

    /// The member number this invitation admits.
    pub fn member(&self) -> MemberId {
        self.cert.member
    }

    /// The proof a joining device with key `device` puts in its first commit.
    pub fn join_proof(&self, device: &PublicKey) -> JoinProof {
        let invite = SecretKey::from_bytes(self.invite_secret);
        JoinProof {
            invite: self.cert.clone(),
            member_key: *device,
            join_sig: invite.sign(&join_message(self.dataset, self.cert.member, device)),
        }
    }
}
