use super::*;

// Records as Linux 6.18 emitted them here (a C program that restricted itself with
// LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON, then opened, created and connected).
const READ_DENIAL: &str = r#"audit(1796133024.192:7): domain=1d9045329 blockers=fs.read_file path="/etc/passwd" dev="vda" ino=409645"#;
const ALLOCATED: &str = r#"audit(1796133024.192:7): domain=1d9045329 status=allocated mode=enforcing pid=3825 uid=0 exe="/tmp/llh/m" comm="m""#;
const WRITE_DENIAL: &str = r#"audit(1796133024.192:8): domain=1d9045329 blockers=fs.write_file path="/tmp/llh/x" dev="vda" ino=10043487"#;
const CONNECT_DENIAL: &str =
    "audit(1796133024.192:9): domain=1d9045329 blockers=net.connect_tcp daddr=10.0.0.1 dest=80";
const OTHER_DOMAIN_DENIAL: &str = r#"audit(1796133024.192:11): domain=1d904532b blockers=fs.read_file path="/etc/passwd" dev="vda" ino=409645"#;
// exe= of a deleted file: the kernel hex-encodes strings holding spaces.
const OTHER_ALLOCATED: &str = "audit(1796133024.192:11): domain=1d904532b status=allocated mode=enforcing pid=3826 uid=0 exe=2F746D702F6C6C682F6D202864656C6574656429 comm=\"m\"";
const DEALLOCATED: &str = "audit(1796133024.252:15): domain=1d9045329 status=deallocated denials=4";
const SYSCALL: &str = "audit(1796133024.192:7): arch=c000003e syscall=257 success=no exit=-13 a0=ffffff9c items=0 ppid=3823 pid=3825 comm=\"m\" exe=\"/tmp/llh/m\" key=(null)";

const LIMITS: AuditLimits = AuditLimits {
    records_count_max: 1000,
    records_bytes_max: 1 << 20,
    denials_count_max: 8,
    object_bytes_max: 200,
    drain_timeout: Duration::from_secs(5),
    poll_interval: Duration::from_millis(10),
};

/// A fake audit log holding `items` that echoes every user message (the drain marker) back.
fn echoing_fake(items: impl IntoIterator<Item = Received>) -> FakeAudit {
    let mut fake = FakeAudit {
        echo_user_messages: true,
        ..FakeAudit::default()
    };
    fake.items.extend(items);
    fake
}

fn record(kind: u16, text: &str) -> Received {
    Received::Record {
        kind,
        text: text.as_bytes().to_vec(),
    }
}

fn denial(blockers: &str, object: &str) -> LandlockDenial {
    LandlockDenial {
        blockers: blockers.into(),
        object: object.into(),
    }
}

/// The deterministic text of a 1423 record that must parse as an access denial.
fn access_of(text: &str) -> String {
    match parse_landlock_record(AUDIT_LANDLOCK_ACCESS, text.as_bytes(), 200) {
        Ok(Some(LandlockRecord::Access { denial, .. })) => denial.access(),
        other => panic!("not an access denial: {other:?} from {text}"),
    }
}

#[test]
fn access_records_become_deterministic_text() {
    let parsed = parse_landlock_record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL.as_bytes(), 200);
    assert_eq!(
        parsed,
        Ok(Some(LandlockRecord::Access {
            serial: 7,
            domain: 0x1d9045329,
            denial: denial("fs.read_file", "/etc/passwd"),
        }))
    );
    assert_eq!(
        access_of(CONNECT_DENIAL),
        "net.connect_tcp 10.0.0.1:80",
        "connect denial"
    );
    let ipv6 = "audit(1.0:3): domain=a blockers=net.bind_tcp saddr=::1 src=8080";
    assert_eq!(access_of(ipv6), "net.bind_tcp [::1]:8080", "bind denial");
    // Several rights, a hex-encoded path (it holds a space) and a signal target whose pid is
    // left out.
    let hex = "audit(1.0:4): domain=a blockers=fs.write_file,fs.truncate path=2F746D702F6120622E747874 dev=\"vda\" ino=12";
    assert_eq!(
        access_of(hex),
        "fs.write_file,fs.truncate /tmp/a b.txt",
        "hex path"
    );
    let signal = "audit(1.0:5): domain=a blockers=scope.signal opid=1234 ocomm=\"sleep\"";
    assert_eq!(
        access_of(signal),
        "scope.signal ocomm=sleep",
        "signal denial"
    );
}

#[test]
fn domain_records_parse() {
    assert_eq!(
        parse_landlock_record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED.as_bytes(), 200),
        Ok(Some(LandlockRecord::DomainAllocated {
            serial: 7,
            domain: 0x1d9045329,
            pid: 3825
        }))
    );
    assert_eq!(
        parse_landlock_record(AUDIT_LANDLOCK_DOMAIN, OTHER_ALLOCATED.as_bytes(), 200),
        Ok(Some(LandlockRecord::DomainAllocated {
            serial: 11,
            domain: 0x1d904532b,
            pid: 3826
        }))
    );
    assert_eq!(
        parse_landlock_record(AUDIT_LANDLOCK_DOMAIN, DEALLOCATED.as_bytes(), 200),
        Ok(Some(LandlockRecord::DomainDeallocated {
            serial: 15,
            domain: 0x1d9045329
        }))
    );
    assert_eq!(
        parse_landlock_record(1300, SYSCALL.as_bytes(), 200),
        Ok(None)
    );
}

#[test]
fn malformed_records_are_errors_not_panics() {
    let cases: &[(u16, &[u8], RecordParseError)] = &[
        (
            AUDIT_LANDLOCK_ACCESS,
            b"",
            RecordParseError::Prefix { kind: 1423 },
        ),
        (
            AUDIT_LANDLOCK_ACCESS,
            b"audit(1.0:x): domain=1 blockers=fs.read_file",
            RecordParseError::Prefix { kind: 1423 },
        ),
        (
            AUDIT_LANDLOCK_ACCESS,
            b"audit(1.0:7): domain=zz blockers=fs.read_file",
            RecordParseError::Field {
                kind: 1423,
                field: "domain",
            },
        ),
        (
            AUDIT_LANDLOCK_ACCESS,
            b"audit(1.0:7): domain=1 path=\"/etc\"",
            RecordParseError::Field {
                kind: 1423,
                field: "blockers",
            },
        ),
        (
            AUDIT_LANDLOCK_ACCESS,
            b"audit(1.0:7): domain=1 blockers=fs.read_file path=\"/etc",
            RecordParseError::Prefix { kind: 1423 },
        ),
        (
            AUDIT_LANDLOCK_ACCESS,
            b"audit(1.0:7): domain=1 blockers=fs\xff path=\"/etc\"",
            RecordParseError::Field {
                kind: 1423,
                field: "blockers",
            },
        ),
        (
            AUDIT_LANDLOCK_DOMAIN,
            b"audit(1.0:7): domain=1 status=allocated pid=-4",
            RecordParseError::Field {
                kind: 1424,
                field: "pid",
            },
        ),
        (
            AUDIT_LANDLOCK_DOMAIN,
            b"audit(1.0:7): domain=1 status=frozen",
            RecordParseError::Status {
                kind: 1424,
                status: "frozen".into(),
            },
        ),
        (
            AUDIT_LANDLOCK_DOMAIN,
            b"audit(1.0:7): domain=1 garbage",
            RecordParseError::Prefix { kind: 1424 },
        ),
    ];
    for (kind, text, expected) in cases {
        assert_eq!(
            parse_landlock_record(*kind, text, 200).as_ref(),
            Err(expected),
            "{}",
            String::from_utf8_lossy(text)
        );
    }
    // Every prefix of a real record: an error or a record, never a panic.
    for end in 0..READ_DENIAL.len() {
        let _ = parse_landlock_record(AUDIT_LANDLOCK_ACCESS, &READ_DENIAL.as_bytes()[..end], 200);
    }
}

#[test]
fn long_paths_are_shortened_deterministically() {
    let long = format!(
        "audit(1.0:4): domain=a blockers=fs.read_file path=\"/{}\" dev=\"vda\" ino=1",
        "é".repeat(150)
    );
    let Ok(Some(LandlockRecord::Access { denial: d, .. })) =
        parse_landlock_record(AUDIT_LANDLOCK_ACCESS, long.as_bytes(), 64)
    else {
        panic!("long path did not parse");
    };
    assert!(d.object.len() <= 64, "{}", d.object);
    assert!(d.object.starts_with("/éé"), "{}", d.object);
    assert!(d.object.ends_with("...[301 bytes]"), "{}", d.object);
    assert_eq!(bounded_text("short", 64), "short");
}

#[test]
fn collector_keeps_only_the_cage_domain_in_serial_order() {
    let mut fake = echoing_fake([
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
        record(1300, SYSCALL),
        record(AUDIT_LANDLOCK_ACCESS, OTHER_DOMAIN_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, OTHER_ALLOCATED),
        record(AUDIT_LANDLOCK_ACCESS, CONNECT_DENIAL),
        record(AUDIT_LANDLOCK_ACCESS, WRITE_DENIAL),
        record(
            AUDIT_LANDLOCK_ACCESS,
            "audit(1.0:10): domain=1d9045329 blockers",
        ),
        Received::Woken,
    ]);
    let got = collect_landlock_denials(&mut fake, 3825, LIMITS, "drain 1-3825".into());
    assert_eq!(fake.sent, ["drain 1-3825"]);
    assert_eq!(
        got,
        LandlockDenials {
            denials: vec![
                denial("fs.read_file", "/etc/passwd"),
                denial("fs.write_file", "/tmp/llh/x"),
                denial("net.connect_tcp", "10.0.0.1:80"),
            ],
            dropped_count: 0,
            malformed_count: 1,
            collection: DenialCollection::Complete,
        }
    );
}

#[test]
fn collector_bounds_denials_and_reports_losses() {
    let limits = AuditLimits {
        denials_count_max: 1,
        ..LIMITS
    };
    let mut fake = echoing_fake([
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
        Received::Lost,
        record(AUDIT_LANDLOCK_ACCESS, WRITE_DENIAL),
        Received::Woken,
    ]);
    let got = collect_landlock_denials(&mut fake, 3825, limits, "m".into());
    assert_eq!(got.denials, [denial("fs.read_file", "/etc/passwd")]);
    assert_eq!(got.dropped_count, 1);
    assert_eq!(got.collection, DenialCollection::RecordsLost);
}

#[test]
fn collector_ends_at_deallocation_or_budget() {
    // No marker echo: the domain's deallocation record ends the drain.
    let mut fake = FakeAudit::default();
    fake.items.extend([
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
        Received::Woken,
        record(AUDIT_LANDLOCK_DOMAIN, DEALLOCATED),
    ]);
    let got = collect_landlock_denials(&mut fake, 3825, LIMITS, "m".into());
    assert_eq!(got.collection, DenialCollection::Complete);
    assert_eq!(got.denials, [denial("fs.read_file", "/etc/passwd")]);

    let limits = AuditLimits {
        records_count_max: 2,
        ..LIMITS
    };
    let mut fake = FakeAudit::default();
    fake.items.extend([
        record(1300, SYSCALL),
        record(1300, SYSCALL),
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        Received::Woken,
    ]);
    let got = collect_landlock_denials(&mut fake, 3825, limits, "m".into());
    assert_eq!(got.collection, DenialCollection::BudgetExhausted);
    assert!(got.denials.is_empty());
    assert_eq!(fake.items.len(), 2, "reading stopped at the budget");
}

#[test]
fn collector_without_marker_times_out() {
    let limits = AuditLimits {
        drain_timeout: Duration::ZERO,
        ..LIMITS
    };
    let mut fake = FakeAudit::default();
    fake.items.extend([Received::Woken]);
    let got = collect_landlock_denials(&mut fake, 3825, limits, "m".into());
    assert_eq!(got.collection, DenialCollection::DrainTimedOut);
    assert_eq!(
        got.collection.to_string(),
        "incomplete: the audit drain marker did not come back in time"
    );
}

#[test]
fn netlink_framing_round_trips() {
    let mut datagram = netlink_message(AUDIT_LANDLOCK_ACCESS, 0, 0, READ_DENIAL.as_bytes());
    datagram.extend(netlink_message(NLMSG_ERROR, 0, 9, &(-1i32).to_ne_bytes()));
    let messages = split_netlink(&datagram);
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].kind, AUDIT_LANDLOCK_ACCESS);
    assert_eq!(messages[0].payload, READ_DENIAL.as_bytes());
    assert_eq!(messages[1].seq, 9);
    assert_eq!(error_code(messages[1].payload), 1);
    // A length below the header size or a short datagram ends the walk without a panic.
    assert!(split_netlink(&[0u8; 16]).is_empty());
    assert!(split_netlink(&datagram[..10]).is_empty());
    let cut = split_netlink(&datagram[..40]);
    assert_eq!(cut[0].payload, &READ_DENIAL.as_bytes()[..24]);
}

#[test]
fn follower_driven_step_by_step_collects_what_the_thread_would() {
    let mut follower = DenialFollower::new(3825, LIMITS, "drain 1-3825".into());
    let mut fake = echoing_fake([
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
    ]);
    // The loop saw the socket readable: everything queued is taken in, nothing waits.
    follower.read_ready(&mut fake);
    assert!(fake.items.is_empty());
    assert!(!follower.is_done(), "the workload still runs");
    fake.items
        .push_back(record(AUDIT_LANDLOCK_ACCESS, WRITE_DENIAL));
    follower.workload_ended(&mut fake);
    // Once only: a second call sends no second marker.
    follower.workload_ended(&mut fake);
    assert_eq!(fake.sent, ["drain 1-3825"]);
    follower.drain(&mut fake);
    assert!(follower.is_done());
    assert_eq!(
        follower.finish(),
        LandlockDenials {
            denials: vec![
                denial("fs.read_file", "/etc/passwd"),
                denial("fs.write_file", "/tmp/llh/x"),
            ],
            dropped_count: 0,
            malformed_count: 0,
            collection: DenialCollection::Complete,
        }
    );
}

#[test]
fn drain_sends_the_marker_itself_and_reads_what_is_queued_even_past_the_deadline() {
    // A caller that comes to drain late (reaping, cgroup removal): the deadline has passed, but
    // the marker is already queued behind the cage's records, so the collection is complete.
    let limits = AuditLimits {
        drain_timeout: Duration::ZERO,
        ..LIMITS
    };
    let mut fake = echoing_fake([
        record(AUDIT_LANDLOCK_ACCESS, READ_DENIAL),
        record(AUDIT_LANDLOCK_DOMAIN, ALLOCATED),
    ]);
    let mut follower = DenialFollower::new(3825, limits, "drain 1-3825".into());
    // No workload_ended first: drain sends the marker when nobody did.
    follower.drain(&mut fake);
    assert_eq!(fake.sent, ["drain 1-3825"]);
    let got = follower.finish();
    assert_eq!(got.collection, DenialCollection::Complete);
    assert_eq!(got.denials, vec![denial("fs.read_file", "/etc/passwd")]);
}
