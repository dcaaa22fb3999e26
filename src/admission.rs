//! Who may hold a socket: at most MAX_CONNECTIONS on this instance, MAX_CONNECTIONS_PER_IP
//! per client address (IPv6 by its /64) and MAX_CONNECTIONS_PER_PARTICIPANT per
//! participant. A `ConnectionSlot` holds its places from the handshake until the socket
//! closes; a socket still waiting for its `auth` message counts against its address only.
//! Only handshakes come here, never the message path.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use metrics::{Counter, counter};

use crate::config::Config;
use crate::domain::UserId;
use crate::limits::client_key;

/// Which cap refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Instance,
    PerIp,
    PerParticipant,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::PerIp => "per_ip",
            Self::PerParticipant => "per_participant",
        }
    }
}

pub struct Admission {
    max_total: usize,
    max_per_ip: u32,
    max_per_participant: u32,
    total: AtomicUsize,
    per_ip: Counts<IpAddr>,
    per_participant: Counts<UserId>,
    refused: [Counter; 3],
}

/// Open connections per key; a key is forgotten when its last connection closes, so the
/// map never holds more keys than there are connections.
pub struct Counts<K>(Mutex<HashMap<K, u32>>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash> Counts<K> {
    /// Counts one more for `key`, unless it already has `max`.
    pub fn try_add(&self, key: K, max: u32) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key).or_insert(0);
        if *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    pub fn remove(&self, key: K) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Entry::Occupied(mut entry) = counts.entry(key) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }

    fn keys(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Admission {
    pub fn new(config: &Config) -> Arc<Self> {
        let refused = [Refusal::Instance, Refusal::PerIp, Refusal::PerParticipant]
            .map(|r| counter!("convoy_ws_connections_refused_total", "reason" => r.as_str()));
        Arc::new(Self {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            max_per_participant: config.max_connections_per_participant,
            total: AtomicUsize::new(0),
            per_ip: Counts::default(),
            per_participant: Counts::default(),
            refused,
        })
    }

    /// A place for a socket from `ip`, or which cap is full (and the refusal counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let ip = client_key(ip);
        if !self.per_ip.try_add(ip, self.max_per_ip) {
            return Err(self.refuse(Refusal::PerIp));
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            self.per_ip.remove(ip);
            return Err(self.refuse(Refusal::Instance));
        }
        Ok(ConnectionSlot { admission: self.clone(), ip, participant: None })
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        self.refused[refusal as usize].increment(1);
        refusal
    }

    /// Sockets open or being opened on this instance.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Addresses and participants holding sockets (what the maps hold, for tests).
    pub fn tracked(&self) -> (usize, usize) {
        (self.per_ip.keys(), self.per_participant.keys())
    }
}

/// A socket's places, released when it drops.
pub struct ConnectionSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
    participant: Option<UserId>,
}

impl ConnectionSlot {
    /// Counts the socket against its participant, once its token is known.
    pub fn bind(&mut self, user_id: UserId) -> Result<(), Refusal> {
        if self.participant.is_some() {
            return Ok(());
        }
        let admission = &self.admission;
        if !admission.per_participant.try_add(user_id, admission.max_per_participant) {
            return Err(admission.refuse(Refusal::PerParticipant));
        }
        self.participant = Some(user_id);
        Ok(())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let admission = &self.admission;
        admission.total.fetch_sub(1, Ordering::Relaxed);
        admission.per_ip.remove(self.ip);
        if let Some(user_id) = self.participant {
            admission.per_participant.remove(user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn admission(total: usize, per_ip: u32, per_participant: u32) -> Arc<Admission> {
        let mut config = crate::config::Cli::try_parse_from(["convoy"]).unwrap().config;
        (config.max_connections, config.max_connections_per_ip, config.max_connections_per_participant) =
            (total, per_ip, per_participant);
        Admission::new(&config)
    }

    #[test]
    fn each_cap_refuses_and_every_place_comes_back() {
        let admission = admission(3, 2, 1);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap());
        let one = admission.admit(a).unwrap();
        let mut two = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refusal::PerIp));
        let three = admission.admit(b).unwrap();
        assert_eq!(admission.admit(c).err(), Some(Refusal::Instance));
        drop(three);
        let mut four = admission.admit(c).unwrap();
        let user = UserId(uuid::Uuid::new_v4());
        two.bind(user).unwrap();
        assert_eq!(four.bind(user), Err(Refusal::PerParticipant));
        drop((one, two, four));
        assert_eq!(admission.open(), 0);
        assert_eq!(admission.tracked(), (0, 0), "no key outlives its sockets");
    }

    #[test]
    fn an_ipv6_client_is_one_address_per_64() {
        let admission = admission(10, 1, 1);
        let _held = admission.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert_eq!(admission.admit("2001:db8:1:2:ffff::9".parse().unwrap()).err(), Some(Refusal::PerIp));
        assert!(admission.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
    }
}
