"""The CLI's client commands, built on the SDK (:mod:`drsdtp.client`); no daemon imports."""
