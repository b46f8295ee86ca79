# Gatekeeper's decision in Rego, over a data document generated from the policy model
# (see `shipped.data.json`). Instants are seconds since the Unix epoch.
#
# input: {"app": "<app id>", "action": "update", "at": 1600776000, "known": 1600776000,
#         "countries": ["US", "PR"]}
package gatekeeper

import rego.v1

default allow := true

allow := false if count(deny) > 0

# A prohibition denies when its instrument is known, it covers the app (directly or
# through an owner up the chain) and the action, any country of the request lies in
# its region, and it is in force: effective, not ended, not suspended, not revoked.
deny contains p.id if {
	some p in data.gatekeeper.prohibitions
	p.issued <= input.known
	input.action in p.actions
	some target in data.gatekeeper.apps[input.app].ancestors
	target in p.targets
	some country in input.countries
	country in p.countries
	input.at >= effective(p)
	not ended(p)
	not suspended(p)
	not revoked(p)
}

# The latest delay known replaces the effective instant.
known_delays(p) := [d | some d in p.delays; d.issued <= input.known]

effective(p) := p.effective if count(known_delays(p)) == 0

effective(p) := d.effective if {
	delays := known_delays(p)
	count(delays) > 0
	latest := max([x.issued | some x in delays])
	some d in delays
	d.issued == latest
}

ended(p) if {
	p.end != null
	input.at >= p.end
}

suspended(p) if {
	some s in p.suspensions
	s.issued <= input.known
	input.at >= s.from
	s.until == null
}

suspended(p) if {
	some s in p.suspensions
	s.issued <= input.known
	input.at >= s.from
	s.until != null
	input.at < s.until
}

revoked(p) if {
	some r in p.revocations
	r.issued <= input.known
	input.at >= r.from
}
