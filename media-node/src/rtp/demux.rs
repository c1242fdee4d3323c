//! Which call a datagram on a shared RTP socket belongs to, sans-IO.
//!
//! The media engine receives every call of a worker on one socket, so each datagram is routed
//! by where it came from. A call's *address* is where its media is expected from: the address
//! in the peer's SDP until the call latches (symmetric RTP, RFC 4961: the first accepted packet's
//! source), the latched source after. Its *SSRC* is bound when the call's session accepts its
//! first packet. [`Demux::route`] tries, in order:
//!
//! 1. a call at exactly this source address bound to this SSRC;
//! 2. the calls at this source address: the oldest one not yet bound to an SSRC, else the only
//!    call there (its peer changed SSRC); several calls all bound to other SSRCs: none;
//! 3. a call at this IP address (another port) bound to this SSRC: RTCP from port + 1, or a
//!    peer that moved ports;
//! 4. the calls at this IP address: the only call there (whatever its port: sipp replays DTMF
//!    from another port), else the only one not yet bound;
//! 5. a source nobody expects (a NAT rewrote the SDP's address): the one call not yet bound,
//!    when there is exactly one.
//!
//! Rules 4 and 5 only apply to source addresses no call is at, and only when they leave a
//! single candidate, so a packet arriving before its own call is registered cannot latch a
//! neighbour sharing its address. Calls that share one media address (a load generator, some
//! gateways) are told apart by SSRC, bound first come first served. The session the packet is
//! handed to still applies its own checks (payload type, the latched IP).
//!
//! Lookups are hash lookups plus, for the rare packets that miss, a scan of the calls at one
//! address. Nothing allocates per packet; maps grow when calls are added.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

#[derive(Debug, Clone, Copy)]
struct Route {
    addr: Option<SocketAddr>,
    ssrc: Option<u32>,
}

#[derive(Debug, Default)]
struct At {
    /// Calls at this address, oldest first.
    keys: Vec<usize>,
    /// How many of them have no SSRC yet.
    unbound: usize,
}

/// Routes datagrams to calls (identified by small integer keys). See the module docs.
#[derive(Debug, Default)]
pub struct Demux {
    routes: Vec<Option<Route>>,
    bound: HashMap<(SocketAddr, u32), usize>,
    bound_ip: HashMap<(IpAddr, u32), usize>,
    at: HashMap<SocketAddr, At>,
    at_ip: HashMap<IpAddr, At>,
    /// Calls with no SSRC yet.
    unbound: HashSet<usize>,
}

impl Demux {
    pub fn new() -> Self {
        Demux::default()
    }

    /// Calls known.
    pub fn len(&self) -> usize {
        self.routes.iter().filter(|r| r.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds call `key` expected from `addr` (the SDP's; `None` when it gave none). Replaces a
    /// call with the same key.
    pub fn insert(&mut self, key: usize, addr: Option<SocketAddr>) {
        self.remove(key);
        if self.routes.len() <= key {
            self.routes.resize(key + 1, None);
        }
        let addr = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        self.routes[key] = Some(Route { addr, ssrc: None });
        self.unbound.insert(key);
        if let Some(a) = addr {
            self.index(key, a, None);
        }
    }

    /// Forgets call `key`.
    pub fn remove(&mut self, key: usize) {
        let Some(route) = self.routes.get_mut(key).and_then(Option::take) else {
            return;
        };
        self.unbound.remove(&key);
        if let Some(a) = route.addr {
            self.unindex(key, a, route.ssrc);
        }
    }

    /// Call `key` is now expected from `addr` (it latched, or a re-INVITE moved it). The SSRC
    /// binding is kept: the SSRC moves with the address.
    pub fn set_address(&mut self, key: usize, addr: Option<SocketAddr>) {
        let Some(route) = self.routes.get(key).copied().flatten() else {
            return;
        };
        let addr = addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        if route.addr == addr {
            return;
        }
        if let Some(old) = route.addr {
            self.unindex(key, old, route.ssrc);
        }
        if let Some(a) = addr {
            self.index(key, a, route.ssrc);
        }
        if let Some(Some(r)) = self.routes.get_mut(key) {
            r.addr = addr;
        }
    }

    /// Call `key`'s session accepted a packet with `ssrc`: bind (or re-bind) it.
    pub fn confirm(&mut self, key: usize, ssrc: u32) {
        let Some(route) = self.routes.get(key).copied().flatten() else {
            return;
        };
        if route.ssrc == Some(ssrc) {
            return;
        }
        if let Some(a) = route.addr {
            self.unindex(key, a, route.ssrc);
            self.index(key, a, Some(ssrc));
        }
        self.unbound.remove(&key);
        if let Some(Some(r)) = self.routes.get_mut(key) {
            r.ssrc = Some(ssrc);
        }
    }

    /// Where call `key` is expected from, and its SSRC.
    pub fn get(&self, key: usize) -> Option<(Option<SocketAddr>, Option<u32>)> {
        self.routes
            .get(key)
            .copied()
            .flatten()
            .map(|r| (r.addr, r.ssrc))
    }

    fn ssrc_of(&self, key: usize) -> Option<u32> {
        self.routes.get(key).copied().flatten().and_then(|r| r.ssrc)
    }

    fn first_unbound(&self, at: &At) -> Option<usize> {
        if at.unbound == 0 {
            return None;
        }
        at.keys.iter().copied().find(|&k| self.ssrc_of(k).is_none())
    }

    /// The call a datagram from `from` carrying `ssrc` (an RTP packet's SSRC, an RTCP
    /// packet's sender) belongs to, if any. See the module docs for the rules.
    pub fn route(&self, from: SocketAddr, ssrc: u32) -> Option<usize> {
        if let Some(&k) = self.bound.get(&(from, ssrc)) {
            return Some(k);
        }
        if let Some(at) = self.at.get(&from) {
            if let Some(k) = self.first_unbound(at) {
                return Some(k);
            }
            return match at.keys.as_slice() {
                [only] => Some(*only),
                _ => None,
            };
        }
        if let Some(&k) = self.bound_ip.get(&(from.ip(), ssrc)) {
            return Some(k);
        }
        if let Some(at) = self.at_ip.get(&from.ip()) {
            if let [only] = at.keys.as_slice() {
                return Some(*only);
            }
            if at.unbound == 1 {
                return self.first_unbound(at);
            }
            return None;
        }
        if self.unbound.len() == 1 {
            return self.unbound.iter().next().copied();
        }
        None
    }

    fn index(&mut self, key: usize, addr: SocketAddr, ssrc: Option<u32>) {
        let at = self.at.entry(addr).or_default();
        at.keys.push(key);
        let at_ip = self.at_ip.entry(addr.ip()).or_default();
        at_ip.keys.push(key);
        match ssrc {
            Some(s) => {
                self.bound.insert((addr, s), key);
                self.bound_ip.insert((addr.ip(), s), key);
            }
            None => {
                at.unbound += 1;
                at_ip.unbound += 1;
            }
        }
    }

    fn unindex(&mut self, key: usize, addr: SocketAddr, ssrc: Option<u32>) {
        fn drop_key<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, At>,
            k: K,
            key: usize,
            bound: bool,
        ) {
            if let Some(at) = map.get_mut(&k) {
                at.keys.retain(|&x| x != key);
                if !bound {
                    at.unbound = at.unbound.saturating_sub(1);
                }
                if at.keys.is_empty() {
                    map.remove(&k);
                }
            }
        }
        drop_key(&mut self.at, addr, key, ssrc.is_some());
        drop_key(&mut self.at_ip, addr.ip(), key, ssrc.is_some());
        if let Some(s) = ssrc {
            // Another call at the same place with the same SSRC takes the entry over.
            if self.bound.get(&(addr, s)) == Some(&key) {
                match self.other_with(self.at.get(&addr), key, s) {
                    Some(k) => self.bound.insert((addr, s), k),
                    None => self.bound.remove(&(addr, s)),
                };
            }
            if self.bound_ip.get(&(addr.ip(), s)) == Some(&key) {
                match self.other_with(self.at_ip.get(&addr.ip()), key, s) {
                    Some(k) => self.bound_ip.insert((addr.ip(), s), k),
                    None => self.bound_ip.remove(&(addr.ip(), s)),
                };
            }
        }
    }

    fn other_with(&self, at: Option<&At>, not: usize, ssrc: u32) -> Option<usize> {
        at?.keys
            .iter()
            .copied()
            .find(|&k| k != not && self.ssrc_of(k) == Some(ssrc))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn calls_at_their_own_addresses() {
        let mut d = Demux::new();
        d.insert(0, Some(a("10.0.0.1:4000")));
        d.insert(1, Some(a("10.0.0.2:4000")));
        assert_eq!(d.route(a("10.0.0.1:4000"), 7), Some(0));
        assert_eq!(d.route(a("10.0.0.2:4000"), 7), Some(1));
        d.confirm(0, 7);
        // The peer changes SSRC: still the only call there.
        assert_eq!(d.route(a("10.0.0.1:4000"), 8), Some(0));
        // Another port of the same IP (DTMF replayed from elsewhere): the only call there.
        assert_eq!(d.route(a("10.0.0.1:4002"), 9), Some(0));
        // Nobody expects this IP, and call 1 is the only unbound one: a NAT.
        assert_eq!(d.route(a("192.0.2.9:1234"), 1), Some(1));
        d.confirm(1, 3);
        assert_eq!(d.route(a("192.0.2.9:1234"), 1), None);
        d.remove(0);
        assert_eq!(d.route(a("10.0.0.1:4000"), 7), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn shared_address_is_told_apart_by_ssrc() {
        let mut d = Demux::new();
        let gen = a("127.0.0.1:5000");
        for k in 0..3 {
            d.insert(k, Some(gen));
        }
        // First come, first bound.
        assert_eq!(d.route(gen, 100), Some(0));
        d.confirm(0, 100);
        assert_eq!(d.route(gen, 100), Some(0));
        assert_eq!(d.route(gen, 101), Some(1));
        d.confirm(1, 101);
        assert_eq!(d.route(gen, 102), Some(2));
        d.confirm(2, 102);
        assert_eq!(d.route(gen, 101), Some(1));
        // A stranger SSRC at a shared address: nobody.
        assert_eq!(d.route(gen, 999), None);
        // RTCP from port + 1 carries the sender's SSRC.
        assert_eq!(d.route(a("127.0.0.1:5001"), 102), Some(2));
        assert_eq!(d.route(a("127.0.0.1:5001"), 999), None);
    }

    #[test]
    fn an_early_packet_does_not_latch_a_neighbour() {
        let mut d = Demux::new();
        let s1 = a("127.0.0.1:5000");
        let s2 = a("127.0.0.1:5002");
        d.insert(0, Some(s1));
        d.confirm(0, 1);
        d.insert(1, Some(s1));
        d.confirm(1, 2);
        // Call 2 waits at s2; a packet of a call not registered yet arrives from s1.
        d.insert(2, Some(s2));
        assert_eq!(d.route(s1, 3), None);
        assert_eq!(d.route(s2, 3), Some(2));
    }

    #[test]
    fn latching_moves_the_call() {
        let mut d = Demux::new();
        d.insert(0, Some(a("10.0.0.1:4000")));
        d.insert(1, Some(a("10.0.0.9:4000")));
        d.confirm(0, 5);
        d.confirm(1, 6);
        d.set_address(0, Some(a("198.51.100.7:30000")));
        assert_eq!(d.route(a("198.51.100.7:30000"), 5), Some(0));
        assert_eq!(d.route(a("10.0.0.1:4000"), 5), None);
        assert_eq!(d.get(0), Some((Some(a("198.51.100.7:30000")), Some(5))));
        // No address at all (hold with 0.0.0.0): nothing routes to it any more.
        d.set_address(0, None);
        assert_eq!(d.route(a("198.51.100.7:30000"), 5), None);
        // A new call, the only one unbound, takes a stranger's packet (a NAT).
        d.insert(2, Some(a("10.0.0.3:4000")));
        assert_eq!(d.route(a("198.51.100.7:30000"), 5), Some(2));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u8, u16),
        Remove(usize),
        Move(usize, u8, u16),
        Confirm(usize, u32),
        Route(u8, u16, u32),
    }

    fn addr(ip: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, ip % 4], port % 6))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..12, any::<u8>(), any::<u16>()).prop_map(|(k, i, p)| Op::Insert(k, i, p)),
            (0usize..12).prop_map(Op::Remove),
            (0usize..12, any::<u8>(), any::<u16>()).prop_map(|(k, i, p)| Op::Move(k, i, p)),
            (0usize..12, 0u32..4).prop_map(|(k, s)| Op::Confirm(k, s)),
            (any::<u8>(), any::<u16>(), 0u32..4).prop_map(|(i, p, s)| Op::Route(i, p, s)),
        ]
    }

    proptest! {
        /// Whatever happens, routing never panics and only ever names a live call; an exact
        /// (address, SSRC) match always wins.
        #[test]
        fn routes_only_live_calls(ops in proptest::collection::vec(op(), 0..200)) {
            let mut d = Demux::new();
            let mut live: HashMap<usize, (Option<SocketAddr>, Option<u32>)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, i, p) => {
                        let ad = addr(i, p);
                        let ad = (ad.port() != 0).then_some(ad);
                        d.insert(k, ad);
                        live.insert(k, (ad, None));
                    }
                    Op::Remove(k) => {
                        d.remove(k);
                        live.remove(&k);
                    }
                    Op::Move(k, i, p) => {
                        let ad = addr(i, p);
                        let ad = (ad.port() != 0).then_some(ad);
                        d.set_address(k, ad);
                        if let Some(e) = live.get_mut(&k) {
                            e.0 = ad;
                        }
                    }
                    Op::Confirm(k, s) => {
                        d.confirm(k, s);
                        if let Some(e) = live.get_mut(&k) {
                            e.1 = Some(s);
                        }
                    }
                    Op::Route(i, p, s) => {
                        let from = addr(i, p);
                        if let Some(k) = d.route(from, s) {
                            prop_assert!(live.contains_key(&k), "routed to a dead call {k}");
                        }
                        let exact: Vec<usize> = live
                            .iter()
                            .filter(|(_, (ad, ss))| *ad == Some(from) && *ss == Some(s))
                            .map(|(k, _)| *k)
                            .collect();
                        if exact.len() == 1 {
                            prop_assert_eq!(d.route(from, s), Some(exact[0]));
                        }
                    }
                }
                prop_assert_eq!(d.len(), live.len());
                for (k, v) in &live {
                    prop_assert_eq!(d.get(*k), Some(*v));
                }
            }
        }
    }
}
