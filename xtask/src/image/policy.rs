//! The appliance's reviewed policy files (appliance/kernel.fragment,
//! appliance/cmdline.conf, appliance/sysctl.conf): every entry carries its
//! reason after `#`, and an entry without one is refused, so nothing gets
//! into the kernel config, the command line or the sysctls unexplained.

use std::collections::BTreeMap;

/// One `NAME=value  # reason` (fragment, sysctl) or `param  # reason`
/// (cmdline) entry, with its 1-based line number for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub text: String,
    pub reason: String,
}

/// Splits a policy file into entries. Blank lines and lines starting with
/// `#` are comments; every other line must be `ENTRY  # reason`.
pub fn entries(text: &str, file: &str) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((entry, reason)) = trimmed.split_once('#') else {
            anyhow::bail!("{file}:{line}: `{trimmed}` has no reason: write `  # why` after it");
        };
        let (entry, reason) = (entry.trim(), reason.trim());
        anyhow::ensure!(
            !reason.is_empty(),
            "{file}:{line}: `{entry}` has an empty reason"
        );
        out.push(Entry {
            line,
            text: entry.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(out)
}

/// A kernel config fragment: `CONFIG_X=value` per entry, checked for
/// duplicates. Values keep their spelling (`y`, `n`, `64`, `"text"`).
pub fn kconfig_fragment(text: &str, file: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for e in entries(text, file)? {
        let Some((name, value)) = e.text.split_once('=') else {
            anyhow::bail!(
                "{file}:{}: expected CONFIG_NAME=value, got `{}`",
                e.line,
                e.text
            );
        };
        anyhow::ensure!(
            name.starts_with("CONFIG_")
                && name[7..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "{file}:{}: `{name}` is not a CONFIG_ symbol name",
            e.line
        );
        anyhow::ensure!(
            !value.is_empty(),
            "{file}:{}: `{name}` has no value",
            e.line
        );
        if map.insert(name.to_owned(), value.to_owned()).is_some() {
            anyhow::bail!("{file}:{}: `{name}` is set twice", e.line);
        }
    }
    Ok(map)
}

/// The fragment as kconfig reads it: `=n` becomes `# CONFIG_X is not set`
/// (kconfig treats both the same, the comment form is what it writes).
pub fn kconfig_clean(fragment: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for (name, value) in fragment {
        if value == "n" {
            out.push_str(&format!("# {name} is not set\n"));
        } else {
            out.push_str(&format!("{name}={value}\n"));
        }
    }
    out
}

/// Reads a generated `.config` into name → value (`n` for "is not set").
pub fn dot_config(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ")
            && let Some(name) = rest.strip_suffix(" is not set")
        {
            map.insert(name.to_owned(), "n".to_owned());
        } else if let Some((name, value)) = line.split_once('=')
            && name.starts_with("CONFIG_")
        {
            map.insert(name.to_owned(), value.to_owned());
        }
    }
    map
}

/// Every fragment line the final config disagrees with: kconfig drops an
/// option silently when a dependency is missing, and this is where we
/// notice. A symbol absent from `.config` counts as `n`.
pub fn kconfig_mismatches(
    fragment: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
) -> Vec<String> {
    fragment
        .iter()
        .filter_map(|(name, want)| {
            let got = config.get(name).map_or("n", String::as_str);
            (got != want).then(|| format!("{name}: fragment asks for {want}, .config has {got}"))
        })
        .collect()
}

/// The kernel command line from cmdline.conf, one space between parameters.
pub fn cmdline(text: &str, file: &str) -> anyhow::Result<String> {
    let params: Vec<String> = entries(text, file)?
        .into_iter()
        .map(|e| {
            anyhow::ensure!(
                !e.text.contains(char::is_whitespace),
                "{file}:{}: one parameter per line, got `{}`",
                e.line,
                e.text
            );
            Ok(e.text)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(params.join(" "))
}

/// sysctl.conf as `key = value` pairs, in file order.
pub fn sysctls(text: &str, file: &str) -> anyhow::Result<Vec<(String, String)>> {
    // PID 1's own parser, so the build refuses exactly what the appliance would.
    let policy = metanode_init::sysctl::SysctlPolicy::parse(text)
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok(policy
        .entries()
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_entries_without_a_reason() {
        let err = entries("CONFIG_A=y  # fine\nCONFIG_B=y\n", "f").unwrap_err();
        assert!(err.to_string().contains("f:2"), "{err}");
        let err = entries("CONFIG_A=y  #   \n", "f").unwrap_err();
        assert!(err.to_string().contains("empty reason"), "{err}");
    }

    #[test]
    fn fragment_checks_names_duplicates_and_mismatches() {
        assert!(kconfig_fragment("lower=y # r\n", "f").is_err());
        let err = kconfig_fragment("CONFIG_A=y # r\nCONFIG_A=n # r\n", "f").unwrap_err();
        assert!(err.to_string().contains("set twice"), "{err}");
        let frag = kconfig_fragment(
            "CONFIG_A=y # r\nCONFIG_B=n # r\nCONFIG_C=64 # r\nCONFIG_D=n # r\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            kconfig_clean(&frag),
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=64\n# CONFIG_D is not set\n"
        );
        let config = dot_config("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=32\nCONFIG_D=y\n");
        assert_eq!(
            kconfig_mismatches(&frag, &config),
            vec![
                "CONFIG_C: fragment asks for 64, .config has 32".to_owned(),
                "CONFIG_D: fragment asks for n, .config has y".to_owned(),
            ]
        );
        // Absent from .config means not set.
        let frag = kconfig_fragment("CONFIG_E=y # r\nCONFIG_F=n # r\n", "f").unwrap();
        assert_eq!(kconfig_mismatches(&frag, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn the_committed_policy_files_parse() {
        let root = crate::workspace_root().join("appliance");
        let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
        let frag = kconfig_fragment(&read("kernel.fragment"), "kernel.fragment").unwrap();
        assert_eq!(
            frag.get("CONFIG_BPF_JIT_ALWAYS_ON").map(String::as_str),
            Some("y")
        );
        let line = cmdline(&read("cmdline.conf"), "cmdline.conf").unwrap();
        assert!(line.starts_with("console=ttyS0"), "{line}");
        let sys = sysctls(&read("sysctl.conf"), "sysctl.conf").unwrap();
        assert!(
            sys.iter()
                .any(|(k, v)| k == "kernel.kptr_restrict" && v == "2")
        );
    }
}

/// What a KSPP checklist line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KsppKind {
    Kconfig,
    Cmdline,
    Sysctl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsppItem {
    pub line: usize,
    pub kind: KsppKind,
    pub item: String,
    /// Why we do not follow it; `None` means we do, and the build checks it.
    pub except: Option<String>,
}

/// Parses appliance/kspp.conf.
pub fn kspp(text: &str, file: &str) -> anyhow::Result<Vec<KsppItem>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, except) = match trimmed.split_once('#') {
            Some((body, comment)) => {
                let Some(reason) = comment.trim().strip_prefix("except:") else {
                    anyhow::bail!(
                        "{file}:{line}: a comment after an item must be `# except: reason`"
                    );
                };
                let reason = reason.trim();
                anyhow::ensure!(
                    !reason.is_empty(),
                    "{file}:{line}: `except:` needs a reason"
                );
                (body.trim(), Some(reason.to_owned()))
            }
            None => (trimmed, None),
        };
        let Some((kind, item)) = body.split_once(char::is_whitespace) else {
            anyhow::bail!("{file}:{line}: expected `kconfig|cmdline|sysctl ITEM`, got `{body}`");
        };
        let kind = match kind {
            "kconfig" => KsppKind::Kconfig,
            "cmdline" => KsppKind::Cmdline,
            "sysctl" => KsppKind::Sysctl,
            other => {
                anyhow::bail!("{file}:{line}: unknown kind `{other}` (kconfig, cmdline or sysctl)")
            }
        };
        out.push(KsppItem {
            line,
            kind,
            item: item.trim().to_owned(),
            except,
        });
    }
    Ok(out)
}

/// Followed and excepted counts per kind, for the size report, the bench
/// JSON and SPECIFICATION.md.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct KsppCounts {
    pub kconfig_followed: usize,
    pub kconfig_excepted: usize,
    pub cmdline_followed: usize,
    pub cmdline_excepted: usize,
    pub sysctl_followed: usize,
    pub sysctl_excepted: usize,
}

/// Checks every followed item against the image's real inputs; returns the
/// counts, or every item that is claimed but not true.
pub fn kspp_check(
    items: &[KsppItem],
    config: &BTreeMap<String, String>,
    cmdline: &str,
    sysctls: &[(String, String)],
) -> anyhow::Result<KsppCounts> {
    let params: Vec<&str> = cmdline.split_whitespace().collect();
    let mut counts = KsppCounts::default();
    let mut wrong = Vec::new();
    for it in items {
        let excepted = it.except.is_some();
        let (followed_slot, excepted_slot) = match it.kind {
            KsppKind::Kconfig => (&mut counts.kconfig_followed, &mut counts.kconfig_excepted),
            KsppKind::Cmdline => (&mut counts.cmdline_followed, &mut counts.cmdline_excepted),
            KsppKind::Sysctl => (&mut counts.sysctl_followed, &mut counts.sysctl_excepted),
        };
        if excepted {
            *excepted_slot += 1;
            continue;
        }
        *followed_slot += 1;
        let holds = match it.kind {
            KsppKind::Kconfig => match it.item.split_once('=') {
                Some((name, want)) => config.get(name).map_or("n", String::as_str) == want,
                None => false,
            },
            KsppKind::Cmdline => params.contains(&it.item.as_str()),
            KsppKind::Sysctl => match it.item.split_once('=') {
                Some((key, want)) => sysctls.iter().any(|(k, v)| k == key && v == want),
                None => false,
            },
        };
        if !holds {
            wrong.push(format!("line {}: {:?} {}", it.line, it.kind, it.item));
        }
    }
    anyhow::ensure!(
        wrong.is_empty(),
        "appliance/kspp.conf claims {} item(s) the image does not have (fix the image or mark them `# except: reason`):\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
    Ok(counts)
}

#[cfg(test)]
mod kspp_tests {
    use super::*;

    #[test]
    fn checklist_counts_and_refuses_false_claims() {
        let items = kspp(
            "kconfig CONFIG_A=y\nkconfig CONFIG_B=n\ncmdline x=1\ncmdline y  # except: why\nsysctl k.v=2\n",
            "k",
        )
        .unwrap();
        let config = dot_config("CONFIG_A=y\n");
        let counts = kspp_check(&items, &config, "x=1 z", &[("k.v".into(), "2".into())]).unwrap();
        assert_eq!(
            (
                counts.kconfig_followed,
                counts.cmdline_followed,
                counts.cmdline_excepted,
                counts.sysctl_followed
            ),
            (2, 1, 1, 1)
        );
        let err = kspp_check(&items, &config, "z", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3") && err.contains("line 5"), "{err}");
        assert!(kspp("kconfig CONFIG_A=y # why\n", "k").is_err());
        assert!(kspp("module CONFIG_A=y\n", "k").is_err());
    }

    #[test]
    fn the_committed_checklist_parses_and_the_cmdline_and_sysctls_hold() {
        let root = crate::workspace_root().join("appliance");
        let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
        let items = kspp(&read("kspp.conf"), "kspp.conf").unwrap();
        let line = cmdline(&read("cmdline.conf"), "cmdline.conf").unwrap();
        let sys = sysctls(&read("sysctl.conf"), "sysctl.conf").unwrap();
        // The kconfig half is checked against the built kernel by `xtask image`;
        // here only the cmdline and sysctl halves, which need no build.
        let no_kconfig: Vec<KsppItem> = items
            .into_iter()
            .filter(|i| i.kind != KsppKind::Kconfig)
            .collect();
        kspp_check(&no_kconfig, &BTreeMap::new(), &line, &sys).unwrap();
    }
}
