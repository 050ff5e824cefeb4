# Titres et messages de chaque résultat, traduits de locales/en/outcomes.ftl.

outcome-access_denied-title = Connexion annulée
outcome-access_denied-message = Vous avez choisi de ne pas donner l'accès, rien n'a donc été connecté. Vous pouvez réessayer quand vous le souhaitez.

outcome-invalid_request-title = Impossible de démarrer cette connexion
outcome-invalid_request-message = Le service n'a pas accepté la demande. Veuillez revenir à l'application et réessayer plus tard, ou contacter l'assistance.

outcome-unauthorized_client-title = Cette connexion n'est pas disponible
outcome-unauthorized_client-message = L'application n'est pas autorisée à se connecter à ce service pour le moment. Veuillez contacter l'assistance.

outcome-unsupported_response_type-title = Cette connexion n'est pas disponible
outcome-unsupported_response_type-message = Le service n'accepte pas la manière dont l'application a demandé l'accès. Veuillez contacter l'assistance.

outcome-invalid_scope-title = Cette connexion n'est pas disponible
outcome-invalid_scope-message = L'application a demandé un accès que le service ne propose pas. Veuillez contacter l'assistance.

outcome-server_error-title = Le service a rencontré un problème
outcome-server_error-message = Le service auquel vous vous connectez a rencontré une erreur. Veuillez réessayer dans quelques minutes.

outcome-temporarily_unavailable-title = Le service est surchargé
outcome-temporarily_unavailable-message = Le service auquel vous vous connectez est temporairement indisponible. Veuillez réessayer dans quelques minutes.

outcome-login_required-title = Veuillez vous connecter
outcome-login_required-message = Vous devez vous connecter au service pour pouvoir l'associer. Réessayez et connectez-vous lorsque cela vous est demandé.

outcome-consent_required-title = Votre accord est nécessaire
outcome-consent_required-message = Le service a besoin que vous autorisiez l'accès. Réessayez et donnez votre accord lorsque cela vous est demandé.

outcome-interaction_required-title = Une étape est nécessaire sur le service
outcome-interaction_required-message = Le service vous demande d'effectuer une étape avant la connexion. Réessayez et suivez ses instructions.

outcome-state_missing-title = Cette page a été ouverte sans connexion en cours
outcome-state_missing-message = Cette adresse ne doit être ouverte que depuis le service auquel vous vous connectiez. Revenez à l'application pour recommencer.

outcome-state_invalid-title = Ce lien de connexion n'est pas valide
outcome-state_invalid-message = Nous n'avons pas pu associer cette page à une connexion que vous avez démarrée. Revenez à l'application pour recommencer.

outcome-session_expired-title = Cette connexion a pris trop de temps
outcome-session_expired-message = Trop de temps s'est écoulé entre le début et la fin, nous avons donc interrompu la connexion pour protéger votre compte. Veuillez recommencer.

outcome-browser_mismatch-title = Terminez dans le même navigateur
outcome-browser_mismatch-message = Cette connexion a été démarrée dans un autre navigateur ou une autre fenêtre. Veuillez revenir à l'application et terminer la connexion dans le navigateur où vous l'avez commencée.

outcome-flow_already_used-title = Cette connexion a déjà été effectuée
outcome-flow_already_used-message = Cette étape a déjà été utilisée. Si vous venez de connecter votre compte, vous n'avez rien d'autre à faire ; sinon, revenez à l'application pour recommencer.

outcome-code_missing-title = Le service n'a pas envoyé ce que nous attendions
outcome-code_missing-message = Le service auquel vous vous connectiez vous a renvoyé ici sans les informations dont nous avons besoin. Veuillez revenir à l'application et réessayer.

outcome-issuer_mismatch-title = Impossible de vérifier cette connexion
outcome-issuer_mismatch-message = La réponse ne provenait pas du service auquel vous vous connectiez, nous avons donc tout arrêté. Veuillez revenir à l'application et réessayer.

outcome-id_token_invalid-title = Impossible de vérifier cette connexion
outcome-id_token_invalid-message = Nous n'avons pas pu vérifier la réponse du service auquel vous vous connectiez. Veuillez réessayer plus tard ou contacter l'assistance.

outcome-failed_to_exchange_token-invalid_grant-title = Veuillez relancer la connexion
outcome-failed_to_exchange_token-invalid_grant-message = La connexion n'a pas pu aboutir. Recommencer suffit généralement à régler le problème.

outcome-failed_to_exchange_token-invalid_client-title = Cette connexion n'est pas disponible
outcome-failed_to_exchange_token-invalid_client-message = L'application n'a pas pu finaliser la connexion en raison d'un problème de configuration de son côté. Veuillez contacter l'assistance.

outcome-failed_to_exchange_token-redirect_uri_mismatch-title = Cette connexion n'est pas disponible
outcome-failed_to_exchange_token-redirect_uri_mismatch-message = L'application n'a pas pu finaliser la connexion en raison d'un problème de configuration de son côté. Veuillez contacter l'assistance.

outcome-failed_to_exchange_token-timeout-title = Le service ne répond pas
outcome-failed_to_exchange_token-timeout-message = Le service auquel vous vous connectez a mis trop de temps à répondre. Veuillez réessayer dans quelques minutes.

outcome-failed_to_exchange_token-provider_unavailable-title = Le service a rencontré un problème
outcome-failed_to_exchange_token-provider_unavailable-message = Le service auquel vous vous connectez a rencontré une erreur. Veuillez réessayer dans quelques minutes.

outcome-failed_to_exchange_token-malformed_response-title = Le service a donné une réponse inattendue
outcome-failed_to_exchange_token-malformed_response-message = Le service auquel vous vous connectez a répondu d'une manière que nous n'avons pas pu exploiter. Veuillez réessayer plus tard ou contacter l'assistance.

outcome-failed_to_exchange_token-post_auth_hook-title = Un problème est survenu de notre côté
outcome-failed_to_exchange_token-post_auth_hook-message = La connexion n'a pas pu être enregistrée. Veuillez réessayer dans quelques minutes.

outcome-user_verify_url_not_configured-title = Impossible de finaliser cette connexion
outcome-user_verify_url_not_configured-message = L'application n'est pas encore configurée pour confirmer les connexions. Veuillez contacter l'assistance.

outcome-user_verification_failed-title = Impossible de confirmer cette connexion
outcome-user_verification_failed-message = Nous n'avons pas pu confirmer que cette connexion vous appartient, rien n'a donc été connecté. Veuillez revenir à l'application et réessayer.

outcome-insufficient_scope-title = Certaines autorisations n'ont pas été accordées
outcome-insufficient_scope-message = La connexion a besoin de toutes les autorisations demandées. Veuillez réessayer en laissant toutes les autorisations cochées.

outcome-link_expired-title = Ce lien a expiré
outcome-link_expired-message = Les liens de connexion ne fonctionnent que pendant une durée limitée. Revenez à l'application pour en obtenir un nouveau.

outcome-link_used-title = Ce lien a déjà été utilisé
outcome-link_used-message = Ce lien a déjà connecté votre compte, et chaque lien ne fonctionne qu'une fois. Pour vous connecter à nouveau, revenez à l'application pour obtenir un nouveau lien.

outcome-link_invalid-title = Ce lien n'est pas valide
outcome-link_invalid-message = Ce lien de connexion est incomplet ou a été modifié. Revenez à l'application pour en obtenir un nouveau.

outcome-connection_unknown-title = Cette connexion n'est pas disponible
outcome-connection_unknown-message = L'application n'est pas configurée pour ce service. Veuillez contacter l'assistance.

outcome-redirect_uri_mismatch-title = Cette connexion n'est pas disponible
outcome-redirect_uri_mismatch-message = L'application n'a pas pu démarrer la connexion en raison d'un problème de configuration de son côté. Veuillez contacter l'assistance.

outcome-single_tenant_app-title = Cette connexion n'est pas disponible
outcome-single_tenant_app-message = L'application n'a pas pu démarrer la connexion en raison d'un problème de configuration de son côté. Veuillez contacter l'assistance.

outcome-application_not_found-title = Cette connexion n'est pas disponible
outcome-application_not_found-message = Le service ne reconnaît pas cette application. Veuillez contacter l'assistance.

outcome-admin_consent_required-title = Un administrateur doit approuver cette application
outcome-admin_consent_required-message = Votre organisation exige qu'un administrateur approuve cette application avant que vous puissiez la connecter. Adressez-vous à votre administrateur informatique, puis réessayez.

outcome-user_not_in_tenant-title = Ce compte ne peut pas être utilisé ici
outcome-user_not_in_tenant-message = Le compte utilisé pour vous connecter n'appartient pas à l'organisation avec laquelle fonctionne cette application. Réessayez en vous connectant avec votre compte professionnel.

outcome-admin_policy_enforced-title = Votre organisation bloque cette application
outcome-admin_policy_enforced-message = L'administrateur de votre organisation n'autorise pas cette application à accéder à votre compte. Demandez à votre administrateur informatique de l'autoriser.

outcome-org_internal-title = Cette application est réservée à une seule organisation
outcome-org_internal-message = Cette application ne peut être utilisée qu'avec les comptes de l'organisation qui l'a créée. Veuillez contacter l'assistance.

outcome-app_not_verified-title = Cette application n'est pas encore disponible
outcome-app_not_verified-message = Le service a bloqué l'accès, car l'application n'a pas encore terminé son processus de validation. Veuillez contacter l'assistance.

outcome-workspace_approval_required-title = Votre espace de travail doit approuver cette application
outcome-workspace_approval_required-message = Un administrateur de votre espace de travail doit approuver cette application avant qu'elle puisse être connectée. Adressez-vous à lui, puis réessayez.

outcome-app_not_distributed-title = Cette application n'est pas disponible pour votre espace de travail
outcome-app_not_distributed-message = Cette application ne peut être installée que dans l'espace de travail dans lequel elle a été créée. Veuillez contacter l'assistance.

outcome-application_suspended-title = Cette connexion n'est pas disponible
outcome-application_suspended-message = Le service a suspendu cette application. Veuillez contacter l'assistance.

outcome-token_refresh_failed-title = La connexion doit être renouvelée
outcome-token_refresh_failed-message = Le service n'a pas accepté la connexion enregistrée. Veuillez reconnecter votre compte depuis l'application.

outcome-token_expired-title = La connexion doit être renouvelée
outcome-token_expired-message = La connexion enregistrée a expiré. Veuillez reconnecter votre compte depuis l'application.

outcome-token_rejected-title = La connexion doit être renouvelée
outcome-token_rejected-message = Le service n'accepte plus la connexion enregistrée. Veuillez reconnecter votre compte depuis l'application.

outcome-credential_rejected-title = Cette clé n'a pas été acceptée
outcome-credential_rejected-message = Le service n'a pas accepté ce que vous avez saisi : rien n'a été enregistré. Vérifiez-le et réessayez.

outcome-credential_check_failed-title = La clé n'a pas pu être vérifiée
outcome-credential_check_failed-message = Le service auquel vous vous connectez n'a pas répondu à notre vérification : rien n'a été enregistré. Veuillez réessayer dans quelques minutes.

outcome-unknown_provider_error-title = Le service a signalé un problème
outcome-unknown_provider_error-message = Le service auquel vous vous connectez a signalé un problème. Veuillez réessayer ou contacter l'assistance.

outcome-internal_error-title = Un problème est survenu de notre côté
outcome-internal_error-message = Nous n'avons pas pu finaliser la connexion. Veuillez réessayer dans quelques minutes.
