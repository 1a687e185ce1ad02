"""Who may call what: principals, scopes, tenant API keys and the audit log (see docs/SECURITY.md).

* :mod:`.principal`: :class:`Scope`, :class:`Principal` (the authenticated caller of one request);
* :mod:`.keys`: token format, hashing, verification of tenant API keys and of the operator key;
* :mod:`.management`: the one service layer under the management API and the admin CLI (tenants,
  brands, keys, audit), every change audited in the transaction that makes it.
"""
