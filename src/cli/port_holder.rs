//! Which process listens on a TCP port, from `/proc` (Linux), so that a command refusing to
//! start on a taken port can say who holds it. Best effort: `None` wherever `/proc` does not
//! tell (another OS, another user's process without root).

use std::fs;

/// The pid and command line of the process listening on `port`, if `/proc` shows one.
pub fn holder(port: u16) -> Option<(u32, String)> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.to_string_lossy();
                inodes.iter().any(|i| target == format!("socket:[{i}]"))
            })
        });
        if holds {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let words: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| String::from_utf8_lossy(w).into_owned())
                .collect();
            return Some((pid, words.join(" ")));
        }
    }
    None
}

/// The socket inodes in a `/proc/net/tcp` table that listen on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *fields.get(3)? == LISTEN)
                .then(|| fields.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_socket_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                     0: 0100007F:1FA6 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
                     1: 0100007F:1FA6 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0\n";
        assert_eq!(listening_inodes(table, 0x1FA6), [4242]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn names_this_process_as_the_holder_of_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (pid, cmdline) = holder(port).expect("a holder in /proc");
        assert_eq!(pid, std::process::id());
        assert!(!cmdline.is_empty());
    }
}
