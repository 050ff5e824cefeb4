# Page text of callback-gate. Outcome titles and messages are in outcomes.ftl.
# Variables: $app is the app's name, $connection the connection's name.

connected-title = Connected
connected-body = Your { $connection } account is now connected to { $app }. You can close this window.
back-to-app = Back to { $app }
back-to-app-generic = Back to the app
try-again = Try again
contact-support = Contact support
check-status = Check service status
reference-label = Reference:
actions-label = What you can do

result-gone-title = This page is no longer available
result-gone-body = Connection results are kept for a day. Go back to the app to see whether you are connected.
result-other-browser-title = This page belongs to another browser
result-other-browser-body = A connection result is only shown in the browser that made the connection. Go back to the app to see whether you are connected.
result-verifying-title = Waiting for confirmation
result-verifying-body = The app is confirming that this connection belongs to you. Refresh this page in a moment.
result-pending-title = Still connecting
result-pending-body = The connection is not finished yet. Refresh this page in a moment.

not-found-title = Page not found
not-found-body = There is nothing at this address.
internal-title = Something went wrong on our side
internal-body = Please try again in a few minutes.
uri-too-long-title = This address is too long
headers-too-large-title = This request contains too much information
payload-too-large-title = This request is too large
refused-body = The request was refused before anything was done. Go back to the app and try again.
rate-limited-title = Too many attempts
rate-limited-body = This browser tried to connect too often in a short time. Wait a minute, then go back to the app and try again.

credential-title = Connect { $connection }
credential-intro-key = Enter your { $connection } API key to connect it to { $app }.
credential-intro-basic = Enter your { $connection } username and password to connect it to { $app }.
credential-key-label = API key
credential-username-label = Username
credential-password-label = Password
credential-submit = Connect
credential-privacy = What you enter is checked with { $connection }, then stored encrypted. It is never shown again.
credential-missing = Please fill in every field.
credential-malformed = That does not look right: it is too long or contains characters a key cannot have. Check it and try again.
form-unreadable-title = This form could not be read

support-subject = Connection problem, reference { $reference }
support-body = Hello,

    Connecting { $connection } to { $app } did not work.

    Reference: { $reference }
    Connection: { $connection }
    Time (UTC): { $time }
