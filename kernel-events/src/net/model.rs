//! The network model: links, addresses and routes as the kernel has them, keyed the way the
//! kernel identifies them, so that applying a notification replaces the right object.

use crate::model::{Address, AddressKey, Change, Link, NetworkState, NextHop, Route, RouteKey};

/// One parsed notification or dump entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NetObject {
    NewLink(Link),
    DelLink(Link),
    NewAddress(Address),
    DelAddress(Address),
    /// A route; `replace`: the notification carried NLM_F_REPLACE (`ip route replace` and
    /// `change`), so it takes the place of the route under its key rather than joining it.
    NewRoute {
        route: Route,
        replace: bool,
    },
    DelRoute(Route),
}

/// A model change to report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum NetChange {
    Link(Change, Link),
    Address(Change, Address),
    Route(Change, Route),
}

impl NetworkState {
    /// Applies one notification; pushes what changed (nothing for a repeat of the same state).
    /// Returns `false` when the model cannot place the change for sure (see `new_route`,
    /// `del_route` and `DelLink`): the caller re-reads the routes.
    #[must_use]
    pub(crate) fn apply(&mut self, obj: NetObject, out: &mut Vec<NetChange>) -> bool {
        match obj {
            NetObject::NewLink(link) => match self.links.insert(link.index, link.clone()) {
                None => out.push(NetChange::Link(Change::Added, link)),
                Some(old) if old != link => out.push(NetChange::Link(Change::Changed, link)),
                Some(_) => {}
            },
            NetObject::DelLink(link) => {
                // The kernel announces the deletion of the link's addresses (and IPv6 routes),
                // but flushes its IPv4 routes silently: drop everything that hangs off it.
                let index = link.index;
                let addrs: Vec<AddressKey> = self
                    .addresses
                    .iter()
                    .filter(|(_, a)| a.index == index)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in addrs {
                    if let Some(a) = self.addresses.remove(&k) {
                        out.push(NetChange::Address(Change::Removed, a));
                    }
                }
                let routes: Vec<RouteKey> = self
                    .routes
                    .iter()
                    .filter(|(_, r)| r.uses_link(index))
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut placed = true;
                for k in routes {
                    // An entry with next hops on other links too is a multipath route (gone
                    // with the link) or several routes under one key (the others stay): which
                    // one, the model cannot tell.
                    if self.routes[&k]
                        .next_hops
                        .iter()
                        .any(|h| h.oif.is_some_and(|oif| oif != index))
                    {
                        placed = false;
                        continue;
                    }
                    if let Some(r) = self.routes.remove(&k) {
                        out.push(NetChange::Route(Change::Removed, r));
                    }
                }
                if let Some(old) = self.links.remove(&index) {
                    out.push(NetChange::Link(Change::Removed, old));
                }
                return placed;
            }
            NetObject::NewAddress(addr) => match self.addresses.insert(addr.key(), addr.clone()) {
                None => out.push(NetChange::Address(Change::Added, addr)),
                Some(old) if old != addr => out.push(NetChange::Address(Change::Changed, addr)),
                Some(_) => {}
            },
            NetObject::DelAddress(addr) => {
                if let Some(old) = self.addresses.remove(&addr.key()) {
                    out.push(NetChange::Address(Change::Removed, old));
                }
            }
            NetObject::NewRoute { route, replace } => return self.new_route(route, replace, out),
            NetObject::DelRoute(route) => return self.del_route(route, out),
        }
        true
    }

    /// A new route, or a new state of one.
    ///
    /// Several kernel routes can share a model key: IPv4 routes added with `append` or
    /// `prepend`, IPv6 routes from two routers (not ECMP siblings), and IPv6 ECMP siblings, which
    /// the kernel notifies one group at a time. The entry holds the union of their next hops, as
    /// `ip route` shows a multipath route; a notification without NLM_F_REPLACE joins it. One
    /// with NLM_F_REPLACE takes the entry's place when the entry is a single next hop; over
    /// several, the kernel replaced one route among them (IPv4: the first in its list) or the
    /// whole group (IPv6), which the model cannot tell apart: `false`, re-read.
    fn new_route(&mut self, route: Route, replace: bool, out: &mut Vec<NetChange>) -> bool {
        let Some(old) = self.routes.get_mut(&route.key()) else {
            self.routes.insert(route.key(), route.clone());
            out.push(NetChange::Route(Change::Added, route));
            return true;
        };
        let new = if replace {
            if old.next_hops.len() > 1 && old.next_hops != route.next_hops {
                return false;
            }
            route
        } else {
            let mut hops = old.next_hops.clone();
            for hop in &route.next_hops {
                if !hops.contains(hop) {
                    hops.push(hop.clone());
                }
            }
            Route {
                next_hops: hops,
                ..route
            }
        };
        if *old != new {
            *old = new.clone();
            out.push(NetChange::Route(Change::Changed, new));
        }
        true
    }

    /// A route went away: the next hops it names leave the entry under its key, and the entry
    /// goes when none is left (see `new_route`). A deletion that names none of the entry's next
    /// hops means the model and the kernel disagree: `false`, re-read.
    fn del_route(&mut self, route: Route, out: &mut Vec<NetChange>) -> bool {
        let key = route.key();
        let Some(old) = self.routes.get_mut(&key) else {
            return true; // already gone (a repeat, or a route we never had reason to keep)
        };
        if route.next_hops.is_empty() || old.next_hops.is_empty() {
            // Blackhole, unreachable and the like: one route per key.
            if let Some(old) = self.routes.remove(&key) {
                out.push(NetChange::Route(Change::Removed, old));
            }
            return true;
        }
        let remaining: Vec<NextHop> = old
            .next_hops
            .iter()
            .filter(|h| !route.next_hops.contains(h))
            .cloned()
            .collect();
        if remaining.len() == old.next_hops.len() {
            return false;
        }
        if remaining.is_empty() {
            if let Some(old) = self.routes.remove(&key) {
                out.push(NetChange::Route(Change::Removed, old));
            }
        } else {
            old.next_hops = remaining;
            out.push(NetChange::Route(Change::Changed, old.clone()));
        }
        true
    }

    /// Replaces this state with `fresh` (a dump), reporting the difference: mark and sweep.
    pub(crate) fn replace_with(&mut self, fresh: NetworkState, out: &mut Vec<NetChange>) {
        let old = std::mem::replace(self, fresh);
        // Removals first (routes, addresses, then links), so a consumer never sees an address
        // on a link it was told is gone; then additions in the opposite order.
        for (k, r) in &old.routes {
            if !self.routes.contains_key(k) {
                out.push(NetChange::Route(Change::Removed, r.clone()));
            }
        }
        for (k, a) in &old.addresses {
            if !self.addresses.contains_key(k) {
                out.push(NetChange::Address(Change::Removed, a.clone()));
            }
        }
        for (k, l) in &old.links {
            if !self.links.contains_key(k) {
                out.push(NetChange::Link(Change::Removed, l.clone()));
            }
        }
        for (k, l) in &self.links {
            match old.links.get(k) {
                None => out.push(NetChange::Link(Change::Added, l.clone())),
                Some(o) if o != l => out.push(NetChange::Link(Change::Changed, l.clone())),
                _ => {}
            }
        }
        for (k, a) in &self.addresses {
            match old.addresses.get(k) {
                None => out.push(NetChange::Address(Change::Added, a.clone())),
                Some(o) if o != a => out.push(NetChange::Address(Change::Changed, a.clone())),
                _ => {}
            }
        }
        for (k, r) in &self.routes {
            match old.routes.get(k) {
                None => out.push(NetChange::Route(Change::Added, r.clone())),
                Some(o) if o != r => out.push(NetChange::Route(Change::Changed, r.clone())),
                _ => {}
            }
        }
    }
}
