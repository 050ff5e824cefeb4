# Títulos y mensajes de cada resultado, traducidos de locales/en/outcomes.ftl.

outcome-access_denied-title = Conexión cancelada
outcome-access_denied-message = Ha decidido no dar acceso, así que no se ha conectado nada. Puede volver a intentarlo cuando quiera.

outcome-invalid_request-title = No se ha podido iniciar esta conexión
outcome-invalid_request-message = El servicio no ha aceptado la solicitud. Vuelva a la aplicación e inténtelo de nuevo más tarde, o póngase en contacto con el equipo de soporte.

outcome-unauthorized_client-title = Esta conexión no está disponible
outcome-unauthorized_client-message = En este momento, la aplicación no tiene permiso para conectarse a este servicio. Póngase en contacto con el equipo de soporte.

outcome-unsupported_response_type-title = Esta conexión no está disponible
outcome-unsupported_response_type-message = El servicio no acepta la forma en que la aplicación ha solicitado el acceso. Póngase en contacto con el equipo de soporte.

outcome-invalid_scope-title = Esta conexión no está disponible
outcome-invalid_scope-message = La aplicación ha solicitado un acceso que el servicio no ofrece. Póngase en contacto con el equipo de soporte.

outcome-server_error-title = El servicio ha tenido un problema
outcome-server_error-message = Se ha producido un error en el servicio al que se está conectando. Vuelva a intentarlo dentro de unos minutos.

outcome-temporarily_unavailable-title = El servicio está saturado
outcome-temporarily_unavailable-message = El servicio al que se está conectando no está disponible temporalmente. Vuelva a intentarlo dentro de unos minutos.

outcome-login_required-title = Inicie sesión
outcome-login_required-message = Para conectar el servicio, debe haber iniciado sesión en él. Vuelva a intentarlo e inicie sesión cuando se le pida.

outcome-consent_required-title = Se necesita su aprobación
outcome-consent_required-message = El servicio necesita que usted apruebe el acceso. Vuelva a intentarlo y dé su aprobación cuando se le pida.

outcome-interaction_required-title = Falta un paso en el servicio
outcome-interaction_required-message = El servicio necesita que complete un paso antes de conectarse. Vuelva a intentarlo y siga las instrucciones que aparezcan.

outcome-state_missing-title = Esta página se ha abierto sin una conexión en curso
outcome-state_missing-message = A esta dirección solo se debe llegar desde el servicio al que se estaba conectando. Vuelva a la aplicación para empezar de nuevo.

outcome-state_invalid-title = Este enlace de conexión no es válido
outcome-state_invalid-message = No hemos podido relacionar esta página con ninguna conexión iniciada por usted. Vuelva a la aplicación para empezar de nuevo.

outcome-session_expired-title = La conexión ha tardado demasiado
outcome-session_expired-message = Ha pasado demasiado tiempo entre el inicio y el final, así que la hemos detenido para proteger su cuenta. Vuelva a empezar.

outcome-browser_mismatch-title = Termine en el mismo navegador
outcome-browser_mismatch-message = Esta conexión se inició en otro navegador o en otra ventana. Vuelva a la aplicación y termine la conexión en el navegador donde la inició.

outcome-flow_already_used-title = Esta conexión ya se ha completado
outcome-flow_already_used-message = Este paso ya se ha utilizado. Si acaba de conectar su cuenta, no tiene que hacer nada más; si no, vuelva a la aplicación para empezar de nuevo.

outcome-code_missing-title = El servicio no ha enviado lo que esperábamos
outcome-code_missing-message = El servicio al que se estaba conectando le ha devuelto aquí sin la información que necesitamos. Vuelva a la aplicación e inténtelo de nuevo.

outcome-issuer_mismatch-title = No se ha podido verificar esta conexión
outcome-issuer_mismatch-message = La respuesta no procedía del servicio al que se estaba conectando, así que hemos detenido el proceso. Vuelva a la aplicación e inténtelo de nuevo.

outcome-id_token_invalid-title = No se ha podido verificar esta conexión
outcome-id_token_invalid-message = No hemos podido verificar la respuesta del servicio al que se estaba conectando. Vuelva a intentarlo más tarde o póngase en contacto con el equipo de soporte.

outcome-failed_to_exchange_token-invalid_grant-title = Vuelva a intentar la conexión
outcome-failed_to_exchange_token-invalid_grant-message = No se ha podido completar la conexión. Normalmente se soluciona empezando de nuevo.

outcome-failed_to_exchange_token-invalid_client-title = Esta conexión no está disponible
outcome-failed_to_exchange_token-invalid_client-message = No se ha podido completar la conexión por un problema en la configuración de la aplicación. Póngase en contacto con el equipo de soporte.

outcome-failed_to_exchange_token-redirect_uri_mismatch-title = Esta conexión no está disponible
outcome-failed_to_exchange_token-redirect_uri_mismatch-message = No se ha podido completar la conexión por un problema en la configuración de la aplicación. Póngase en contacto con el equipo de soporte.

outcome-failed_to_exchange_token-timeout-title = El servicio no responde
outcome-failed_to_exchange_token-timeout-message = El servicio al que se está conectando ha tardado demasiado en responder. Vuelva a intentarlo dentro de unos minutos.

outcome-failed_to_exchange_token-provider_unavailable-title = El servicio ha tenido un problema
outcome-failed_to_exchange_token-provider_unavailable-message = Se ha producido un error en el servicio al que se está conectando. Vuelva a intentarlo dentro de unos minutos.

outcome-failed_to_exchange_token-malformed_response-title = El servicio ha dado una respuesta inesperada
outcome-failed_to_exchange_token-malformed_response-message = El servicio al que se está conectando ha respondido de una forma que no hemos podido utilizar. Vuelva a intentarlo más tarde o póngase en contacto con el equipo de soporte.

outcome-failed_to_exchange_token-post_auth_hook-title = Se ha producido un error por nuestra parte
outcome-failed_to_exchange_token-post_auth_hook-message = No se ha podido guardar la conexión. Vuelva a intentarlo dentro de unos minutos.

outcome-user_verify_url_not_configured-title = No se puede completar esta conexión
outcome-user_verify_url_not_configured-message = La aplicación todavía no está preparada para confirmar conexiones. Póngase en contacto con el equipo de soporte.

outcome-user_verification_failed-title = No se ha podido confirmar esta conexión
outcome-user_verification_failed-message = No hemos podido confirmar que esta conexión le pertenece, así que no se ha conectado nada. Vuelva a la aplicación e inténtelo de nuevo.

outcome-insufficient_scope-title = No se han concedido todos los permisos
outcome-insufficient_scope-message = La conexión necesita todos los permisos que ha solicitado. Vuelva a intentarlo y deje todos los permisos seleccionados.

outcome-link_expired-title = Este enlace ha caducado
outcome-link_expired-message = Los enlaces de conexión solo funcionan durante un tiempo limitado. Vuelva a la aplicación para obtener uno nuevo.

outcome-link_used-title = Este enlace ya se ha utilizado
outcome-link_used-message = Este enlace ya conectó su cuenta y cada enlace solo funciona una vez. Si necesita volver a conectarla, vuelva a la aplicación para obtener un enlace nuevo.

outcome-link_invalid-title = Este enlace no es válido
outcome-link_invalid-message = Este enlace de conexión está incompleto o se ha modificado. Vuelva a la aplicación para obtener uno nuevo.

outcome-connection_unknown-title = Esta conexión no está disponible
outcome-connection_unknown-message = La aplicación no está configurada para este servicio. Póngase en contacto con el equipo de soporte.

outcome-redirect_uri_mismatch-title = Esta conexión no está disponible
outcome-redirect_uri_mismatch-message = No se ha podido iniciar la conexión por un problema en la configuración de la aplicación. Póngase en contacto con el equipo de soporte.

outcome-single_tenant_app-title = Esta conexión no está disponible
outcome-single_tenant_app-message = No se ha podido iniciar la conexión por un problema en la configuración de la aplicación. Póngase en contacto con el equipo de soporte.

outcome-application_not_found-title = Esta conexión no está disponible
outcome-application_not_found-message = El servicio no reconoce esta aplicación. Póngase en contacto con el equipo de soporte.

outcome-admin_consent_required-title = Un administrador debe aprobar esta aplicación
outcome-admin_consent_required-message = Su organización exige que un administrador apruebe esta aplicación antes de que usted pueda conectarla. Pídaselo a su administrador de TI y, después, vuelva a intentarlo.

outcome-user_not_in_tenant-title = Esta cuenta no se puede usar aquí
outcome-user_not_in_tenant-message = La cuenta con la que ha iniciado sesión no pertenece a la organización con la que trabaja esta aplicación. Vuelva a intentarlo e inicie sesión con su cuenta del trabajo.

outcome-admin_policy_enforced-title = Su organización bloquea esta aplicación
outcome-admin_policy_enforced-message = El administrador de su organización no permite que esta aplicación acceda a su cuenta. Pida a su administrador de TI que la autorice.

outcome-org_internal-title = Esta aplicación está limitada a una sola organización
outcome-org_internal-message = Esta aplicación solo la pueden usar las cuentas de la organización que la creó. Póngase en contacto con el equipo de soporte.

outcome-app_not_verified-title = Esta aplicación aún no está disponible
outcome-app_not_verified-message = El servicio ha bloqueado el acceso porque la aplicación todavía no ha superado su revisión. Póngase en contacto con el equipo de soporte.

outcome-workspace_approval_required-title = Su espacio de trabajo debe aprobar esta aplicación
outcome-workspace_approval_required-message = Un administrador de su espacio de trabajo tiene que aprobar esta aplicación antes de que se pueda conectar. Pídaselo y, después, vuelva a intentarlo.

outcome-app_not_distributed-title = Esta aplicación no está disponible para su espacio de trabajo
outcome-app_not_distributed-message = Esta aplicación solo se puede instalar en el espacio de trabajo en el que se creó. Póngase en contacto con el equipo de soporte.

outcome-application_suspended-title = Esta conexión no está disponible
outcome-application_suspended-message = El servicio ha suspendido esta aplicación. Póngase en contacto con el equipo de soporte.

outcome-token_refresh_failed-title = La conexión debe renovarse
outcome-token_refresh_failed-message = El servicio no ha aceptado la conexión guardada. Vuelva a conectar su cuenta desde la aplicación.

outcome-token_expired-title = La conexión debe renovarse
outcome-token_expired-message = La conexión guardada ha caducado. Vuelva a conectar su cuenta desde la aplicación.

outcome-token_rejected-title = La conexión debe renovarse
outcome-token_rejected-message = El servicio ya no acepta la conexión guardada. Vuelva a conectar su cuenta desde la aplicación.

outcome-credential_rejected-title = Esa clave no fue aceptada
outcome-credential_rejected-message = El servicio no aceptó lo que introdujo, así que no se guardó nada. Revíselo y vuelva a intentarlo.

outcome-credential_check_failed-title = No se pudo comprobar la clave
outcome-credential_check_failed-message = El servicio al que se conecta no respondió a nuestra comprobación, así que no se guardó nada. Vuelva a intentarlo en unos minutos.

outcome-unknown_provider_error-title = El servicio ha informado de un problema
outcome-unknown_provider_error-message = El servicio al que se está conectando ha informado de un problema. Vuelva a intentarlo o póngase en contacto con el equipo de soporte.

outcome-internal_error-title = Se ha producido un error por nuestra parte
outcome-internal_error-message = No hemos podido completar la conexión. Vuelva a intentarlo dentro de unos minutos.
