"""The evidence format: the contract between the recorder (writes) and the service (verifies).

Everything that crosses from a device to the service, and everything the service
keeps, is defined here and nowhere else: the encrypted segment envelope
(`envelope`), the signed segment statements that form the chain (`chain`), the
recording header that binds consent into the chain with its strict parser, the
upload header names and the endpoint paths (`wire`), the one device-side
writer every device seals through (`writer`), and the errors both sides raise
(`errors`).
"""

FORMAT_VERSION = 1
