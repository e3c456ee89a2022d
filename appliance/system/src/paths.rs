//! Where things live on a running appliance. One place, so PID 1, the agent
//! and the tests agree.

/// The data partition (ext4), or a tmpfs when the disk has none.
pub const DATA_MOUNT: &str = "/var/lib/metanode";
/// The node's state: the store, the node key (`node.data_dir`).
pub const NODE_DIR: &str = "/var/lib/metanode/node";
/// The node config and its trial files (metanode_slots::config_try).
pub const CONFIG_DIR: &str = "/var/lib/metanode/config";
/// Uploaded updates are written here before they are verified.
pub const UPLOAD_DIR: &str = "/var/lib/metanode/upload";
/// The EFI system partition (systemd-boot, the slot UKIs).
pub const ESP_MOUNT: &str = "/efi";
/// Updates must be signed by this certificate (the Secure Boot `db` key the
/// image was signed with, baked into the initramfs).
pub const DB_CERT: &str = "/etc/metanode/secureboot-db.pem";
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// The agent binary is PID 1's own executable.
pub const INIT: &str = "/init";
/// Outcome of the last config trial (`committed` or `reverted`), for
/// `GET /api/v1/config/trial` after the trial marker is gone.
pub const CONFIG_OUTCOME_FILE: &str = "config.outcome";
/// Boot attempts a new update gets before systemd-boot falls back.
pub const UPDATE_TRIES: u32 = 3;
/// The runtime sysctl policy (appliance/sysctl.conf), applied by PID 1 and
/// reported live by `GET /api/v1/system`.
pub const SYSCTL_POLICY: &str = include_str!("../../sysctl.conf");
