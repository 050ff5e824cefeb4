# Seitentexte auf Deutsch. Titel und Meldungen der einzelnen Ergebnisse stehen in outcomes.ftl.

connected-title = Verbunden
connected-body = Ihr { $connection }-Konto ist jetzt mit { $app } verbunden. Sie können dieses Fenster schließen.
back-to-app = Zurück zu { $app }
back-to-app-generic = Zurück zur App
try-again = Erneut versuchen
contact-support = Support kontaktieren
check-status = Dienststatus prüfen
reference-label = Referenz:
actions-label = Was Sie tun können

result-gone-title = Diese Seite ist nicht mehr verfügbar
result-gone-body = Verbindungsergebnisse werden einen Tag lang aufbewahrt. Kehren Sie zur App zurück, um zu sehen, ob die Verbindung besteht.
result-other-browser-title = Diese Seite gehört zu einem anderen Browser
result-other-browser-body = Ein Verbindungsergebnis wird nur in dem Browser angezeigt, in dem die Verbindung hergestellt wurde. Kehren Sie zur App zurück, um zu sehen, ob die Verbindung besteht.
result-verifying-title = Warten auf Bestätigung
result-verifying-body = Die App prüft gerade, ob diese Verbindung zu Ihnen gehört. Laden Sie diese Seite in einem Moment neu.
result-pending-title = Verbindung wird noch hergestellt
result-pending-body = Die Verbindung ist noch nicht abgeschlossen. Laden Sie diese Seite in einem Moment neu.

not-found-title = Seite nicht gefunden
not-found-body = Unter dieser Adresse gibt es keine Seite.
internal-title = Bei uns ist etwas schiefgelaufen
internal-body = Bitte versuchen Sie es in ein paar Minuten erneut.
uri-too-long-title = Diese Adresse ist zu lang
headers-too-large-title = Diese Anfrage enthält zu viele Daten
payload-too-large-title = Diese Anfrage ist zu groß
refused-body = Die Anfrage wurde abgelehnt, bevor etwas ausgeführt wurde. Kehren Sie zur App zurück und versuchen Sie es erneut.
rate-limited-title = Zu viele Versuche
rate-limited-body = Von diesem Browser kamen in kurzer Zeit zu viele Verbindungsversuche. Warten Sie eine Minute, kehren Sie dann zur App zurück und versuchen Sie es erneut.

credential-title = { $connection } verbinden
credential-intro-key = Geben Sie Ihren { $connection }-API-Schlüssel ein, um es mit { $app } zu verbinden.
credential-intro-basic = Geben Sie Ihren { $connection }-Benutzernamen und Ihr Passwort ein, um es mit { $app } zu verbinden.
credential-key-label = API-Schlüssel
credential-username-label = Benutzername
credential-password-label = Passwort
credential-submit = Verbinden
credential-privacy = Ihre Eingabe wird bei { $connection } geprüft und dann verschlüsselt gespeichert. Sie wird nie wieder angezeigt.
credential-missing = Bitte füllen Sie alle Felder aus.
credential-malformed = Das sieht nicht richtig aus: Die Eingabe ist zu lang oder enthält Zeichen, die ein Schlüssel nicht enthalten kann. Prüfen Sie sie und versuchen Sie es erneut.
form-unreadable-title = Dieses Formular konnte nicht gelesen werden

support-subject = Verbindungsproblem, Referenz { $reference }
support-body = Hallo,

    die Verbindung von { $connection } mit { $app } hat nicht funktioniert.

    Referenz: { $reference }
    Verbindung: { $connection }
    Uhrzeit (UTC): { $time }
