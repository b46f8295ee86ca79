# Gatekeeper's decision in Rego, over a data document generated from the policy model
# (see `shipped.data.json`), for Gatekeeper's default posture: the generator reads every
# window conservatively (the edge that extends prohibitions and shortens relief), and
# injunctions and non-enforcement orders both relieve. Instants are seconds since the
# Unix epoch.
#
# input: {"app": "<app id>", "action": "update", "at": 1600776000, "known": 1600776000,
#         "countries": ["US", "PR"], "signals": {"storefront": "US", "server_country": "PR"}}
package gatekeeper

import rego.v1

default allow := true

allow := false if count(deny) > 0

# A prohibition denies when its instrument is known, it covers the app (directly or
# through an owner up the chain) and the action, the request is in its region, and it
# is in force: effective, not ended, not relieved, not revoked, not exempt for the app.
# The prohibitions naming the app or one of its owners are looked up (`by_target`), not
# found by scanning every prohibition.
deny contains p.id if {
	some target in data.gatekeeper.apps[input.app].ancestors
	some i in data.gatekeeper.by_target[target]
	p := data.gatekeeper.prohibitions[i]
	p.issued <= input.known
	input.action in p.actions
	not outside(p)
	input.at >= effective(p)
	not ended(p)
	not relieved(p)
	not revoked(p)
	not exempt(p)
}

# Every group of signals must place the request in the region: a signal of the group
# carried in the region, or none of the group carried (fail closed).
outside(p) if {
	some group in p.jurisdiction
	carried := [c | some s in group; c := input.signals[s]]
	count(carried) > 0
	not placed(carried, p.countries)
}

placed(carried, countries) if {
	some c in carried
	c in countries
}

# The latest delay known replaces the effective instant: delays are listed in order of
# issue, so the known ones come first and the last of them wins.
effective(p) := e if {
	known := [d.effective | some d in p.delays; d.issued <= input.known]
	effs := array.concat([p.effective], known)
	e := effs[count(effs) - 1]
}

ended(p) if {
	p.end != null
	input.at >= p.end
}

# An injunction or a non-enforcement order, open-ended or until an instant.
relieved(p) if {
	some r in p.reliefs
	r.issued <= input.known
	input.at >= r.from
	r.until == null
}

relieved(p) if {
	some r in p.reliefs
	r.issued <= input.known
	input.at >= r.from
	r.until != null
	input.at < r.until
}

revoked(p) if {
	some r in p.revocations
	r.issued <= input.known
	input.at >= r.from
}

# The prohibition ceases to apply to the apps an exemption names.
exempt(p) if {
	some x in p.exemptions
	x.issued <= input.known
	input.at >= x.from
	input.app in x.apps
}
