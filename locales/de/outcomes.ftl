# Titel und Meldungen der einzelnen Ergebnisse, übersetzt aus locales/en/outcomes.ftl.

outcome-access_denied-title = Verbindung abgebrochen
outcome-access_denied-message = Sie haben den Zugriff nicht erlaubt, daher wurde nichts verbunden. Sie können es jederzeit erneut versuchen.

outcome-invalid_request-title = Diese Verbindung konnte nicht gestartet werden
outcome-invalid_request-message = Der Dienst hat die Anfrage nicht angenommen. Bitte kehren Sie zur App zurück und versuchen Sie es später erneut, oder wenden Sie sich an den Support.

outcome-unauthorized_client-title = Diese Verbindung ist nicht verfügbar
outcome-unauthorized_client-message = Die App darf sich derzeit nicht mit diesem Dienst verbinden. Bitte wenden Sie sich an den Support.

outcome-unsupported_response_type-title = Diese Verbindung ist nicht verfügbar
outcome-unsupported_response_type-message = Der Dienst akzeptiert die Art nicht, wie die App den Zugriff angefordert hat. Bitte wenden Sie sich an den Support.

outcome-invalid_scope-title = Diese Verbindung ist nicht verfügbar
outcome-invalid_scope-message = Die App hat einen Zugriff angefordert, den der Dienst nicht anbietet. Bitte wenden Sie sich an den Support.

outcome-server_error-title = Beim Dienst ist ein Problem aufgetreten
outcome-server_error-message = Bei dem Dienst, mit dem Sie sich verbinden, ist ein Fehler aufgetreten. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-temporarily_unavailable-title = Der Dienst ist ausgelastet
outcome-temporarily_unavailable-message = Der Dienst, mit dem Sie sich verbinden, ist vorübergehend nicht verfügbar. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-login_required-title = Bitte melden Sie sich an
outcome-login_required-message = Um den Dienst zu verbinden, müssen Sie dort angemeldet sein. Versuchen Sie es erneut und melden Sie sich an, wenn Sie dazu aufgefordert werden.

outcome-consent_required-title = Ihre Zustimmung ist erforderlich
outcome-consent_required-message = Der Dienst benötigt Ihre Zustimmung für den Zugriff. Versuchen Sie es erneut und stimmen Sie zu, wenn Sie dazu aufgefordert werden.

outcome-interaction_required-title = Beim Dienst ist ein weiterer Schritt nötig
outcome-interaction_required-message = Der Dienst benötigt noch einen Schritt von Ihnen, bevor die Verbindung hergestellt werden kann. Versuchen Sie es erneut und folgen Sie den Anweisungen des Dienstes.

outcome-state_missing-title = Diese Seite wurde ohne laufende Verbindung geöffnet
outcome-state_missing-message = Diese Adresse soll nur über den Dienst aufgerufen werden, mit dem Sie sich verbinden wollten. Kehren Sie zur App zurück, um neu zu beginnen.

outcome-state_invalid-title = Dieser Verbindungslink ist ungültig
outcome-state_invalid-message = Wir konnten diese Seite keiner von Ihnen gestarteten Verbindung zuordnen. Kehren Sie zur App zurück, um neu zu beginnen.

outcome-session_expired-title = Diese Verbindung hat zu lange gedauert
outcome-session_expired-message = Zwischen Beginn und Abschluss ist zu viel Zeit vergangen, daher haben wir den Vorgang zum Schutz Ihres Kontos abgebrochen. Bitte beginnen Sie neu.

outcome-browser_mismatch-title = Bitte im selben Browser abschließen
outcome-browser_mismatch-message = Diese Verbindung wurde in einem anderen Browser oder Fenster gestartet. Bitte kehren Sie zur App zurück und schließen Sie die Verbindung in dem Browser ab, in dem Sie begonnen haben.

outcome-flow_already_used-title = Diese Verbindung wurde bereits abgeschlossen
outcome-flow_already_used-message = Dieser Schritt wurde bereits verwendet. Wenn Sie die Verbindung gerade hergestellt haben, ist alles erledigt. Andernfalls kehren Sie zur App zurück, um neu zu beginnen.

outcome-code_missing-title = Der Dienst hat nicht das Erwartete gesendet
outcome-code_missing-message = Der Dienst, mit dem Sie sich verbinden wollten, hat Sie ohne die Informationen zurückgeschickt, die wir benötigen. Bitte kehren Sie zur App zurück und versuchen Sie es erneut.

outcome-issuer_mismatch-title = Diese Verbindung konnte nicht überprüft werden
outcome-issuer_mismatch-message = Die Antwort stammte nicht von dem Dienst, mit dem Sie sich verbinden wollten, daher haben wir den Vorgang abgebrochen. Bitte kehren Sie zur App zurück und versuchen Sie es erneut.

outcome-id_token_invalid-title = Diese Verbindung konnte nicht überprüft werden
outcome-id_token_invalid-message = Wir konnten die Antwort des Dienstes, mit dem Sie sich verbinden wollten, nicht überprüfen. Bitte versuchen Sie es später erneut oder wenden Sie sich an den Support.

outcome-failed_to_exchange_token-invalid_grant-title = Bitte verbinden Sie sich erneut
outcome-failed_to_exchange_token-invalid_grant-message = Die Verbindung konnte nicht abgeschlossen werden. Wenn Sie neu beginnen, klappt es in der Regel.

outcome-failed_to_exchange_token-invalid_client-title = Diese Verbindung ist nicht verfügbar
outcome-failed_to_exchange_token-invalid_client-message = Wegen eines Einrichtungsproblems bei der App konnte die Verbindung nicht abgeschlossen werden. Bitte wenden Sie sich an den Support.

outcome-failed_to_exchange_token-redirect_uri_mismatch-title = Diese Verbindung ist nicht verfügbar
outcome-failed_to_exchange_token-redirect_uri_mismatch-message = Wegen eines Einrichtungsproblems bei der App konnte die Verbindung nicht abgeschlossen werden. Bitte wenden Sie sich an den Support.

outcome-failed_to_exchange_token-timeout-title = Der Dienst antwortet nicht
outcome-failed_to_exchange_token-timeout-message = Der Dienst, mit dem Sie sich verbinden, hat zu lange für eine Antwort gebraucht. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-failed_to_exchange_token-provider_unavailable-title = Beim Dienst ist ein Problem aufgetreten
outcome-failed_to_exchange_token-provider_unavailable-message = Bei dem Dienst, mit dem Sie sich verbinden, ist ein Fehler aufgetreten. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-failed_to_exchange_token-malformed_response-title = Der Dienst hat unerwartet geantwortet
outcome-failed_to_exchange_token-malformed_response-message = Der Dienst, mit dem Sie sich verbinden, hat eine Antwort gesendet, mit der wir nichts anfangen konnten. Bitte versuchen Sie es später erneut oder wenden Sie sich an den Support.

outcome-failed_to_exchange_token-post_auth_hook-title = Bei uns ist etwas schiefgelaufen
outcome-failed_to_exchange_token-post_auth_hook-message = Die Verbindung konnte nicht gespeichert werden. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-user_verify_url_not_configured-title = Diese Verbindung kann nicht abgeschlossen werden
outcome-user_verify_url_not_configured-message = Die App ist noch nicht dafür eingerichtet, Verbindungen zu bestätigen. Bitte wenden Sie sich an den Support.

outcome-user_verification_failed-title = Diese Verbindung konnte nicht bestätigt werden
outcome-user_verification_failed-message = Wir konnten nicht bestätigen, dass diese Verbindung zu Ihnen gehört, daher wurde nichts verbunden. Bitte kehren Sie zur App zurück und versuchen Sie es erneut.

outcome-insufficient_scope-title = Einige Berechtigungen wurden nicht erteilt
outcome-insufficient_scope-message = Für die Verbindung werden alle angefragten Berechtigungen benötigt. Bitte versuchen Sie es erneut und lassen Sie alle Berechtigungen ausgewählt.

outcome-link_expired-title = Dieser Link ist abgelaufen
outcome-link_expired-message = Verbindungslinks funktionieren nur für begrenzte Zeit. Kehren Sie zur App zurück, um einen neuen Link zu erhalten.

outcome-link_used-title = Dieser Link wurde bereits verwendet
outcome-link_used-message = Mit diesem Link wurde Ihr Konto bereits verbunden, und jeder Link funktioniert nur einmal. Wenn Sie die Verbindung erneut herstellen möchten, kehren Sie zur App zurück, um einen neuen Link zu erhalten.

outcome-link_invalid-title = Dieser Link ist ungültig
outcome-link_invalid-message = Dieser Verbindungslink ist unvollständig oder wurde verändert. Kehren Sie zur App zurück, um einen neuen Link zu erhalten.

outcome-connection_unknown-title = Diese Verbindung ist nicht verfügbar
outcome-connection_unknown-message = Die App ist für diesen Dienst nicht eingerichtet. Bitte wenden Sie sich an den Support.

outcome-redirect_uri_mismatch-title = Diese Verbindung ist nicht verfügbar
outcome-redirect_uri_mismatch-message = Wegen eines Einrichtungsproblems bei der App konnte die Verbindung nicht gestartet werden. Bitte wenden Sie sich an den Support.

outcome-single_tenant_app-title = Diese Verbindung ist nicht verfügbar
outcome-single_tenant_app-message = Wegen eines Einrichtungsproblems bei der App konnte die Verbindung nicht gestartet werden. Bitte wenden Sie sich an den Support.

outcome-application_not_found-title = Diese Verbindung ist nicht verfügbar
outcome-application_not_found-message = Der Dienst kennt diese App nicht. Bitte wenden Sie sich an den Support.

outcome-admin_consent_required-title = Diese App muss von der Administration genehmigt werden
outcome-admin_consent_required-message = Ihre Organisation verlangt, dass die Administration diese App genehmigt, bevor Sie sie verbinden können. Wenden Sie sich an Ihre IT-Administration und versuchen Sie es danach erneut.

outcome-user_not_in_tenant-title = Dieses Konto kann hier nicht verwendet werden
outcome-user_not_in_tenant-message = Das Konto, mit dem Sie sich angemeldet haben, gehört nicht zu der Organisation, für die diese App eingerichtet ist. Versuchen Sie es erneut und melden Sie sich mit Ihrem Arbeitskonto an.

outcome-admin_policy_enforced-title = Ihre Organisation blockiert diese App
outcome-admin_policy_enforced-message = Die Administration Ihrer Organisation erlaubt dieser App keinen Zugriff auf Ihr Konto. Bitten Sie Ihre IT-Administration, die App zuzulassen.

outcome-org_internal-title = Diese App ist auf eine Organisation beschränkt
outcome-org_internal-message = Diese App kann nur mit Konten der Organisation verwendet werden, die sie erstellt hat. Bitte wenden Sie sich an den Support.

outcome-app_not_verified-title = Diese App ist noch nicht verfügbar
outcome-app_not_verified-message = Der Dienst hat den Zugriff gesperrt, weil die Prüfung der App noch nicht abgeschlossen ist. Bitte wenden Sie sich an den Support.

outcome-workspace_approval_required-title = Ihr Workspace muss diese App genehmigen
outcome-workspace_approval_required-message = Die Administration Ihres Workspaces muss diese App genehmigen, bevor sie verbunden werden kann. Bitten Sie darum und versuchen Sie es danach erneut.

outcome-app_not_distributed-title = Diese App ist für Ihren Workspace nicht verfügbar
outcome-app_not_distributed-message = Diese App kann nur in dem Workspace installiert werden, in dem sie erstellt wurde. Bitte wenden Sie sich an den Support.

outcome-application_suspended-title = Diese Verbindung ist nicht verfügbar
outcome-application_suspended-message = Der Dienst hat diese App gesperrt. Bitte wenden Sie sich an den Support.

outcome-token_refresh_failed-title = Die Verbindung muss erneuert werden
outcome-token_refresh_failed-message = Der Dienst hat die gespeicherte Verbindung nicht akzeptiert. Bitte verbinden Sie Ihr Konto über die App erneut.

outcome-token_expired-title = Die Verbindung muss erneuert werden
outcome-token_expired-message = Die gespeicherte Verbindung ist abgelaufen. Bitte verbinden Sie Ihr Konto über die App erneut.

outcome-token_rejected-title = Die Verbindung muss erneuert werden
outcome-token_rejected-message = Der Dienst akzeptiert die gespeicherte Verbindung nicht mehr. Bitte verbinden Sie Ihr Konto über die App erneut.

outcome-credential_rejected-title = Dieser Schlüssel wurde nicht akzeptiert
outcome-credential_rejected-message = Der Dienst hat Ihre Eingabe nicht akzeptiert, daher wurde nichts gespeichert. Prüfen Sie sie und versuchen Sie es erneut.

outcome-credential_check_failed-title = Der Schlüssel konnte nicht geprüft werden
outcome-credential_check_failed-message = Der Dienst, mit dem Sie sich verbinden, hat auf unsere Prüfung nicht geantwortet, daher wurde nichts gespeichert. Bitte versuchen Sie es in ein paar Minuten erneut.

outcome-unknown_provider_error-title = Der Dienst hat ein Problem gemeldet
outcome-unknown_provider_error-message = Der Dienst, mit dem Sie sich verbinden, hat ein Problem gemeldet. Bitte versuchen Sie es erneut oder wenden Sie sich an den Support.

outcome-internal_error-title = Bei uns ist etwas schiefgelaufen
outcome-internal_error-message = Wir konnten die Verbindung nicht abschließen. Bitte versuchen Sie es in ein paar Minuten erneut.
