"""Relations between twins (issue 10 item 6): replicated edges (:mod:`.edges`), the local index
(:mod:`.index`), queries (:mod:`.query`), sensor-vs-process corroboration (:mod:`.corroborate`) and the
node's service (:mod:`.service`). Import the modules themselves: this package imports nothing, so the API's
Protocol can name the query types without pulling the service in."""
